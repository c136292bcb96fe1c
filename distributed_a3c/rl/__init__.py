"""Pure RL math and models: no process group, no RPC, no Hydra."""
