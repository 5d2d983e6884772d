from r1train.threads import wait_passively

wait_passively()  # before anything imports torch: see r1train/threads.py
