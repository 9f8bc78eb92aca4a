"""Model adapters onto the Denoiser protocol, attention capture and exact oracles."""
