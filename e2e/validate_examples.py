#!/usr/bin/env python3
"""Validates the custom resources in examples/*.yaml against the openAPIV3Schema of the CRDs
in crds/, the way the API server checks them (CEL rules aside). Exits non-zero on any error.

Usage: python3 e2e/validate_examples.py [REPO_ROOT]
"""

import glob
import os
import sys

import jsonschema
import yaml


def load_schemas(root):
    schemas = {}
    for path in sorted(glob.glob(os.path.join(root, "crds", "*.yaml"))):
        with open(path) as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            key = (f"{group}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def errors_of(schema, document):
    validator = jsonschema.Draft7Validator(schema)
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    schemas = load_schemas(root)
    if not schemas:
        print("no CRDs found in crds/", file=sys.stderr)
        return 1

    # The validator must catch what the schema forbids, or a pass means nothing.
    topic_schema = schemas[("oxbow.dev/v1alpha1", "KafkaTopic")]
    broken = {
        "apiVersion": "oxbow.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": "broken"},
        "spec": {"clusterRef": {"name": "main"}, "partitions": 0, "topicName": "bad name!"},
    }
    if len(errors_of(topic_schema, broken)) < 2:
        print("self-check failed: a broken KafkaTopic passed validation", file=sys.stderr)
        return 1

    failures = 0
    checked = 0
    for path in sorted(glob.glob(os.path.join(root, "examples", "*.yaml"))):
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        for document in documents:
            api_version = document.get("apiVersion", "")
            if not api_version.startswith("oxbow.dev/"):
                continue
            key = (api_version, document.get("kind"))
            name = f"{os.path.relpath(path, root)} {key[1]}/{document.get('metadata', {}).get('name')}"
            schema = schemas.get(key)
            if schema is None:
                print(f"FAIL {name}: no CRD for {key}")
                failures += 1
                continue
            problems = errors_of(schema, document)
            checked += 1
            if problems:
                failures += 1
                print(f"FAIL {name}")
                for problem in problems:
                    print(f"     {problem}")
            else:
                print(f"ok   {name}")
    if checked == 0:
        print("no custom resources found in examples/", file=sys.stderr)
        return 1
    print(f"{checked - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
