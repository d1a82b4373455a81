"""A real llama.cpp server on this machine: built from source, with a generated tiny model.

`build` compiles `llama-server` once per machine, `tinymodel` writes a small random-weight
llama GGUF with a trained BPE vocabulary, `server` runs and stops the process, `cli` is
`kvswarm engine llamacpp`; `cache` says where all of it is kept. See docs/llamacpp.md.
"""
