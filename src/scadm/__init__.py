"""scadm: controllable face synthesis and editing with semantic latent diffusion (SCA-DM)."""

__version__ = "0.1.0"
