"""orgsync: keeps a cloud-security inventory in step with AWS Organizations."""

__version__ = "0.1.0"
