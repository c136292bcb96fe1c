"""The only package that imports torch.distributed: RPC endpoints, remote store, roles, launcher,
rendezvous across attempts, liveness."""
