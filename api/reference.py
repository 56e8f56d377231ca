"""The API reference (docs/api-reference.md), made from the service's OpenAPI document:
``python -m api.reference > docs/api-reference.md``; and the table of roles of
docs/security.md, read from the routes: ``python -m api.reference roles``. Tests keep
both in step."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from api.auth import policy
from domain.keys import Role


def reference(spec: dict[str, Any]) -> str:
    out = ["# API reference", "",
           "Made from the OpenAPI document (`GET /openapi.json`, browsable at `/docs`) by "
           "`python -m api.reference`; a test keeps it in step. Every error is an RFC 9457 "
           "problem document (`application/problem+json`). Roles: docs/security.md.", ""]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            roles = ", ".join(op["x-roles"]) or "public"
            out += [f"## `{method.upper()} {path}`", ""]
            doc = (op.get("description") or op.get("summary") or "").strip()
            if doc:
                out += [doc, ""]
            out += [f"- roles: {roles}"]
            params = [p for p in op.get("parameters", []) if p.get("in") in ("query", "header")]
            for p in params:
                schema = p.get("schema", {})
                kind = schema.get("type") or "/".join(
                    s.get("type", "?") for s in schema.get("anyOf", []) if s.get("type"))
                desc = p.get("description") or schema.get("description") or ""
                out.append(f"- {p['in']} `{p['name']}` ({kind}){': ' + desc if desc else ''}")
            body = op.get("requestBody", {}).get("content", {})
            if body:
                out.append(f"- body: {', '.join(body)}")
            statuses = ", ".join(sorted(op.get("responses", {})))
            out += [f"- answers: {statuses}", ""]
    return "\n".join(out).rstrip() + "\n"


def policy_table(app: FastAPI) -> str:
    """``policy(app)`` as a Markdown table, in path order (docs/security.md holds it; a
    test keeps it in step)."""
    roles = list(Role)
    rows = ["| route | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for (method, path), allowed in sorted(policy(app).items(), key=lambda i: (i[0][1], i[0][0])):
        cells = ["public" if not allowed else ("yes" if r in allowed else "")
                 for r in roles]
        rows.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("SIGNOFF_DATABASE_URL", "sqlite:///:memory:")
    from api.app import create_app

    app = create_app()
    if sys.argv[1:] == ["roles"]:
        print(policy_table(app), end="")
    else:
        print(reference(json.loads(json.dumps(app.openapi()))), end="")
