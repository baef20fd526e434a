"""trainflow's GPU job runtime: model, tokenizer, data, training loop, checkpoints, stages, job protocol."""
