"""Deployment files (docker/, deploy/) and their offline checks (deploy.check)."""
