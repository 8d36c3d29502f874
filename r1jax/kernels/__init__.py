"""Hand-written CPU kernels, built with the machine's C++ compiler on first use and called from jitted code
as XLA FFI custom calls. Each has a pure-JAX twin elsewhere in r1jax that runs everywhere else.

    from r1jax.kernels import cpu
    if cpu.available():
      y = cpu.routed_experts(x_td, idx_tk, w_tk, wg_edf, wu_edf, wd_efd)
"""
