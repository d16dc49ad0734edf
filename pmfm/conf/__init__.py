"""The Hydra configs of every command, installed with the package."""
