"""r1train: the DeepSeek-R1 recipe (GRPO with rule-based rewards, SFT, rejection sampling,
distillation) from one recipe YAML."""
from r1train.threads import bound_openmp_spinning

bound_openmp_spinning()  # before anything imports torch: libgomp reads it when it loads
