"""r1jax: the DeepSeek-R1 recipe in JAX.  pip install -e ".[test]" """
import setuptools

# Tested together on CPU (jax 0.10.2) and kept compatible with jax 0.11.x as found on GPU images.
CORE = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.14",
    "grain>=0.2.18,<0.3",
    "sentencepiece>=0.2.0,<0.3",
    "ml-collections>=1.1.0,<2",
    "absl-py>=2.0",
    "numpy>=1.26",
    "matplotlib>=3.8",    # run reports (PNG curves)
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    # LaTeX answer equivalence for MATH-style rewards (bounded by a process-pool deadline in r1jax.rewards).
    # Its parser needs an antlr4 runtime; named directly, since math-verify's own antlr4 extras point at
    # extra names its latex2sympy2_extended dependency does not define (pip warns about them).
    "math-verify>=0.7",
    "antlr4-python3-runtime==4.13.2",
    # tokenizer.json of Hugging Face model directories (r1jax.data.HFTokenizer); a small wheel, no torch.
    "tokenizers>=0.20",
    # The Jinja chat templates of Hugging Face models (rendered sandboxed, r1jax.data.templates).
    "jinja2>=3.1",
]

# What executing colabs/ needs: the paired .py <-> .ipynb (jupytext), a kernel and a headless runner.
NOTEBOOK_RUN = ["jupytext>=1.16", "nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.25"]

setuptools.setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 in JAX: DeepSeek-V3-style MoE, GRPO with rule rewards, R1 pipeline, distillation.",
    packages=setuptools.find_packages(include=["r1jax", "r1jax.*"]),
    # cpu_kernels.cc is compiled on first use (r1jax.kernels.cpu), so it ships as data.
    package_data={"r1jax.data.tasks": ["datasets/*/*.jsonl", "datasets/*/SOURCE.md"], "r1jax.kernels": ["*.cc"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        # nbclient/nbformat/ipykernel/jupytext: tests/colabs executes the notebooks in CI too.
        "test": ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6", *NOTEBOOK_RUN],
        # torch: CI installs the CPU wheel (torch==2.13.0) before this extra so pip never pulls a CUDA build.
        "hf": ["torch>=2.3", "transformers>=4.57", "safetensors>=0.4"],
        # benchmarks/grpo_step.py --vs-trl: TRL's GRPOTrainer, the same-run peer (install torch first, as for hf).
        "bench": ["torch>=2.3", "transformers>=4.57", "safetensors>=0.4", "trl>=1.16"],
        "notebooks": [*NOTEBOOK_RUN, "matplotlib>=3.8"],
    },
)
