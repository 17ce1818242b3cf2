#!/usr/bin/env bash
# Builds and deploys deploy/aws/template.yaml with the AWS SAM CLI
# (pip install aws-sam-cli cargo-lambda ziglang), after the same checks CI
# runs. The first run asks for the stack's parameters (--guided) and keeps
# the answers in samconfig.toml; later runs reuse them.
#
#   bash deploy/aws/deploy.sh
#
# Before the first deploy, put the secrets in SSM (never in the template):
#   aws ssm put-parameter --name /clickward/cookie-key --type SecureString \
#     --value "$(head -c 64 /dev/urandom | base64 -w0)"
#   aws ssm put-parameter --name /clickward/smtp-password --type SecureString --value '…'
# docs/serverless.md says what the stack holds today.
set -euo pipefail
cd "$(dirname "$0")"
for tool in sam cfn-lint cargo-lambda; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed (pip install aws-sam-cli cfn-lint cargo-lambda ziglang)" >&2; exit 1; }
done
cfn-lint template.yaml
python3 check.py template.yaml
sam build --template-file template.yaml --beta-features
if [ -f samconfig.toml ]; then
  sam deploy
else
  sam deploy --guided --capabilities CAPABILITY_IAM
fi
