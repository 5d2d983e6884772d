"""After an engine of MODEL is synced, closed and dropped (and the pipeline's release run): is its
model alive, and how many of vLLM's reload records remain? `sleep` adds a generate call, a sleep
that frees the weights and a push; `tails` shares prompt tails.

    PYTHONPATH=. .venv/bin/python docs/results/stage_creep_avx2_2026-12-07/records_after_close.py smollm2-135m-instruct [sleep] [tails]
"""
import gc, weakref, sys
from transformers import AutoModelForCausalLM
from r1train.engines import make_engine
from r1train.models import resolve_model_dir, load_tokenizer
from r1train.stage_memory import release_finished_stage
from r1train.engines.base import SamplingSettings
d = resolve_model_dir(sys.argv[1]); tok = load_tokenizer(d)
engine = make_engine("vllm", None, d, tok, max_model_len=256, kv_cache_gib=0.05, seed=0, share_prompt_tails="tails" in sys.argv)
model = AutoModelForCausalLM.from_pretrained(d)
engine.sync_weights(model)
if "sleep" in sys.argv:
    engine.generate([[1, 2, 3]], 2, SamplingSettings(max_new_tokens=4))
    engine.sleep(weights_stale=True); engine.sync_weights(model)
ref = weakref.ref(engine.llm.collective_rpc(lambda worker: worker.model_runner.get_model())[0])
from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO
engine.close(); del engine; release_finished_stage(); gc.collect()
print("RESULT model alive:", ref() is not None, "records", len(LAYERWISE_INFO))
