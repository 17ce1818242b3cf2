#!/usr/bin/env python3
"""Checks deploy/aws/template.yaml for what cfn-lint cannot know about
clickward. It fails when:

- a resource clickward needs is missing: the six tables, with streams on
  clicks and conversions and TTL where raw rows expire; both functions on
  arm64 with their stream events reporting partial batch failures; the HTTP
  API; the distribution;
- an IAM action is a wildcard (`*`, `dynamodb:*`, `s3:Get*`), a policy is a
  managed or SAM template policy instead of named statements, or a
  statement is a Deny-less `NotAction`;
- a tracking path (`/r/*`, `/ref/*`, `/go`) could be answered from a cache:
  no behaviour for it, methods other than GET and HEAD, a cache policy with
  a TTL above 0, or an origin request policy that does not forward every
  query string, cookies and the headers clickward classifies;
- a secret is written in the template (an API key, a webhook secret, an AWS
  key) instead of read from SSM.

Usage: check.py [TEMPLATE]; exit 0 and "ok" or exit 1 with one line per
problem. Standard library and PyYAML only.
"""

import re
import sys

import yaml

TRACKING_PATHS = ["/r/*", "/ref/*", "/go"]

# What the click path reads (crates/server/src/http/tracking.rs: the user
# agent, the referrer, prefetch hints, consent signals); without them a
# prefetch looks like a visit, and without CloudFront-Viewer-Address every
# visitor's address is CloudFront's.
REQUIRED_HEADERS = {
    "user-agent",
    "referer",
    "purpose",
    "sec-purpose",
    "x-moz",
    "sec-gpc",
    "dnt",
    "cloudfront-viewer-address",
}

# (logical id, type)
REQUIRED = [
    ("CatalogTable", "AWS::DynamoDB::Table"),
    ("ClicksTable", "AWS::DynamoDB::Table"),
    ("CountersTable", "AWS::DynamoDB::Table"),
    ("ConversionsTable", "AWS::DynamoDB::Table"),
    ("LedgerTable", "AWS::DynamoDB::Table"),
    ("StateTable", "AWS::DynamoDB::Table"),
    ("HttpApi", "AWS::Serverless::HttpApi"),
    ("TrackerFunction", "AWS::Serverless::Function"),
    ("PostClickFunction", "AWS::Serverless::Function"),
    ("Distribution", "AWS::CloudFront::Distribution"),
]
STREAMS = ["ClicksTable", "ConversionsTable"]
TTL = ["ClicksTable", "CountersTable", "StateTable"]

SECRET_PATTERNS = [
    (re.compile(r"cwk_[A-Za-z0-9_-]{16,}"), "a clickward API key"),
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]{8,}"), "a webhook signing secret"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
]


class Loader(yaml.SafeLoader):
    """Reads CloudFormation's short forms (!Ref, !GetAtt, !Sub, …) as the
    long form ({"Ref": …}, {"Fn::GetAtt": …})."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


Loader.add_multi_constructor("!", _tag)


def actions_of(statement):
    a = statement.get("Action", [])
    return [a] if isinstance(a, str) else list(a)


def check(text):
    problems = []
    try:
        doc = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        return [f"not YAML: {e}"]
    if not isinstance(doc, dict):
        return ["not a template: no mapping at the top"]
    resources = doc.get("Resources") or {}

    for name, kind in REQUIRED:
        r = resources.get(name)
        if r is None:
            problems.append(f"missing resource {name} ({kind})")
        elif r.get("Type") != kind:
            problems.append(f"{name} is a {r.get('Type')}, not a {kind}")
    for name in STREAMS:
        props = (resources.get(name) or {}).get("Properties") or {}
        if not props.get("StreamSpecification", {}).get("StreamViewType"):
            problems.append(f"{name} has no stream: the post-click function would never run")
    for name in TTL:
        props = (resources.get(name) or {}).get("Properties") or {}
        ttl = props.get("TimeToLiveSpecification") or {}
        if not ttl.get("Enabled") or not ttl.get("AttributeName"):
            problems.append(f"{name} has no TTL: its rows would outlive the retention")

    glob = ((doc.get("Globals") or {}).get("Function")) or {}
    for name, r in resources.items():
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        props = r.get("Properties") or {}
        arch = props.get("Architectures", glob.get("Architectures"))
        if arch != ["arm64"]:
            problems.append(f"{name} is not built for arm64 (cargo lambda build --arm64)")
        for pol in props.get("Policies") or []:
            if not isinstance(pol, dict) or set(pol) != {"Statement"}:
                problems.append(
                    f"{name}: policy {pol!r} is a managed or SAM template policy; name each action"
                )
                continue
            for st in pol["Statement"]:
                problems += statement_problems(name, st)
        for ev_name, ev in (props.get("Events") or {}).items():
            if ev.get("Type") in ("DynamoDB", "Kinesis"):
                types = (ev.get("Properties") or {}).get("FunctionResponseTypes") or []
                if "ReportBatchItemFailures" not in types:
                    problems.append(
                        f"{name}.{ev_name}: no ReportBatchItemFailures: one bad record retries the whole batch"
                    )
    for name, r in resources.items():
        if r.get("Type") in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            props = r.get("Properties") or {}
            docs = [props.get("PolicyDocument")] + [
                p.get("PolicyDocument") for p in props.get("Policies") or []
            ]
            for d in filter(None, docs):
                for st in d.get("Statement", []):
                    problems += statement_problems(name, st)
            for arn in props.get("ManagedPolicyArns") or []:
                problems.append(f"{name}: managed policy {arn!r}; name each action")

    problems += distribution_problems(resources)

    for pattern, what in SECRET_PATTERNS:
        if pattern.search(text):
            problems.append(f"the template holds {what}: read it from SSM instead")
    for pname, p in (doc.get("Parameters") or {}).items():
        if re.search(r"secret|password|token|key$", pname, re.I) and "Default" in p:
            default = str(p["Default"])
            if default and not default.startswith("/") and p.get("Type") != "AWS::SSM::Parameter::Name":
                problems.append(f"parameter {pname} has a default value: a secret never has one")
    return problems


def statement_problems(owner, st):
    out = []
    if "NotAction" in st and st.get("Effect") == "Allow":
        out.append(f"{owner}: an Allow with NotAction grants everything else")
    for a in actions_of(st):
        if not isinstance(a, str) or "*" in a:
            out.append(f"{owner}: wildcard IAM action {a!r} (sid {st.get('Sid', '?')}); name each action")
    return out


def resolve(resources, ref):
    if isinstance(ref, dict) and "Ref" in ref:
        return resources.get(ref["Ref"])
    return None


# Managed policy ids (docs.aws.amazon.com, "Using the managed cache
# policies"): CachingDisabled has every TTL at 0.
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"


def distribution_problems(resources):
    out = []
    dist = (resources.get("Distribution") or {}).get("Properties", {}).get("DistributionConfig")
    if not dist:
        return out
    behaviours = {b.get("PathPattern"): b for b in dist.get("CacheBehaviors") or []}
    for path in TRACKING_PATHS:
        b = behaviours.get(path)
        if b is None:
            out.append(f"no cache behaviour for {path}: it would take the default's settings")
            continue
        if sorted(b.get("AllowedMethods") or []) != ["GET", "HEAD"]:
            out.append(f"{path}: methods {b.get('AllowedMethods')} (tracking answers GET and HEAD only)")
        if "ForwardedValues" in b or "DefaultTTL" in b or "MaxTTL" in b:
            out.append(f"{path}: legacy cache settings; use a cache policy with every TTL at 0")
        cp = b.get("CachePolicyId")
        if cp != CACHING_DISABLED:
            policy = resolve(resources, cp)
            if policy is None:
                out.append(f"{path}: cache policy {cp!r} is neither CachingDisabled nor in the template")
            else:
                cfg = policy.get("Properties", {}).get("CachePolicyConfig", {})
                for ttl in ("MinTTL", "DefaultTTL", "MaxTTL"):
                    if str(cfg.get(ttl)) != "0":
                        out.append(f"{path}: cache policy {cp['Ref']} has {ttl} {cfg.get(ttl)}: clicks would be answered from a cache")
        orp = resolve(resources, b.get("OriginRequestPolicyId"))
        if orp is None:
            out.append(f"{path}: no origin request policy in the template: query strings and headers would not reach the tracker")
            continue
        cfg = orp.get("Properties", {}).get("OriginRequestPolicyConfig", {})
        if (cfg.get("QueryStringsConfig") or {}).get("QueryStringBehavior") != "all":
            out.append(f"{path}: not every query string is forwarded (src, sub1..sub5, click ids)")
        if (cfg.get("CookiesConfig") or {}).get("CookieBehavior") != "all":
            out.append(f"{path}: cookies are not forwarded (visitor and attribution cookies)")
        hc = cfg.get("HeadersConfig") or {}
        if hc.get("HeaderBehavior") not in ("whitelist", "allViewer", "allViewerAndWhitelistCloudFront"):
            out.append(f"{path}: headers are not forwarded")
        elif hc.get("HeaderBehavior") == "whitelist":
            have = {h.lower() for h in hc.get("Headers") or []}
            missing = sorted(REQUIRED_HEADERS - have)
            if missing:
                out.append(f"{path}: headers not forwarded: {', '.join(missing)}")
    return out


def main(argv):
    path = argv[1] if len(argv) > 1 else "deploy/aws/template.yaml"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        print(f"{path}: {e}")
        return 1
    problems = check(text)
    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        print("ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
