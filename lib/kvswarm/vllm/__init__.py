"""A real vLLM (its CPU build) with a tiny generated model, for `kvswarm engine vllm` and tests.

- `install`: vLLM's CPU build in its own cached venv, with the fixes it needs to start;
- `tinymodel`: the tiny Qwen2 model directory (random weights, locally trained vocabulary);
- `server`: starting vLLM on a free port, waiting for readiness, always stopping it;
- `cli`: the `kvswarm engine vllm` sub-command.

kvswarm never imports vLLM or torch: both live in the venv and run as subprocesses.
"""

__all__: list[str] = []
