"""r1train: the DeepSeek-R1 recipe (GRPO with rule-based rewards, SFT, rejection sampling,
distillation) from one recipe YAML."""
from r1train.cpu_caches import bound_onednn_primitive_cache
from r1train.threads import bound_openmp_spinning

bound_openmp_spinning()  # before anything imports torch: libgomp reads it when it loads
bound_onednn_primitive_cache()  # before the first matmul: oneDNN reads it when it makes its cache
