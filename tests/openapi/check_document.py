"""Checks an OpenAPI document file: valid OpenAPI 3.1, every $ref resolves, operation ids unique.

Usage: python3 check_document.py DOCUMENT.json
Prints one line per problem and exits 1 when there is any, 0 otherwise.
"""

import json
import sys

from openapi_spec_validator import OpenAPIV31SpecValidator


def refs(node, where="#"):
    """Yields (location, ref) for every $ref in node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from refs(value, f"{where}/{i}")


def resolve(doc, ref):
    """The node a local $ref points at, or None."""
    if not ref.startswith("#/"):
        return None
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def problems(doc):
    found = []
    if not str(doc.get("openapi", "")).startswith("3.1."):
        found.append(f"openapi is {doc.get('openapi')!r}, expected 3.1.x")
    try:
        for error in OpenAPIV31SpecValidator(doc).iter_errors():
            found.append(f"OpenAPI 3.1: {error.message}")
    except Exception as e:  # the validator raises on what it cannot follow (a dangling $ref)
        found.append(f"OpenAPI 3.1: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    for where, ref in refs(doc):
        if resolve(doc, ref) is None:
            found.append(f"{where}: $ref {ref} does not resolve")
    seen = {}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            op_id = op.get("operationId") if isinstance(op, dict) else None
            if op_id is None:
                continue
            if op_id in seen:
                found.append(f"operationId {op_id} of {method} {path} repeats {seen[op_id]}")
            seen[op_id] = f"{method} {path}"
    return found


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    found = problems(doc)
    for line in found:
        print(line)
    print(f"{len(found)} problems in {sys.argv[1]}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
