"""AWS through boto3: caller sessions, AssumeRole, rate control and call counting, the tree walk, permission probes."""
