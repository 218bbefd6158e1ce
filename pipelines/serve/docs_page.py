"""``/api/docs``: the OpenAPI schema as a page a person reads, drawn on the server.

FastAPI's own docs pages load Swagger UI or ReDoc from a CDN, which an offline machine cannot
reach and which this server's content-security policy forbids; the one bundled Swagger UI on
the package registry is too old for OpenAPI 3.1. The schema itself is at /api/openapi.json.
"""

from __future__ import annotations

import html
import json


def _schema_text(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "allOf" in schema:
        return " & ".join(_schema_text(part) for part in schema["allOf"])
    if "enum" in schema:
        return " | ".join(str(value) for value in schema["enum"])
    kind = schema.get("type", "object")
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)


def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def render_docs(openapi: dict) -> str:
    components = openapi.get("components", {}).get("schemas", {})
    e = html.escape
    parts = [f"<h1>{e(openapi['info']['title'])} <small>API {e(openapi['info']['version'])}</small></h1>",
             f"<p>{e(openapi['info'].get('description', ''))}</p>",
             '<p>The machine-readable schema: <a href="/api/openapi.json">/api/openapi.json</a>. '
             'The web page: <a href="/">/</a>.</p>']
    for path, methods in openapi.get("paths", {}).items():
        for method, operation in methods.items():
            parts.append(f'<section class="operation"><h2><code>{e(method.upper())} {e(path)}</code></h2>')
            parts.append(f"<p>{e(operation.get('description') or operation.get('summary', ''))}</p>")
            parameters = operation.get("parameters", [])
            if parameters:
                parts.append("<h3>Parameters</h3><table><tr><th>name</th><th>in</th><th>values</th>"
                             "<th>default</th><th>meaning</th></tr>")
                for parameter in parameters:
                    schema = _resolve(parameter.get("schema", {}), components)
                    parts.append(f"<tr><td><code>{e(parameter['name'])}</code></td><td>{e(parameter['in'])}</td>"
                                 f"<td>{e(_schema_text(schema))}</td>"
                                 f"<td>{e(json.dumps(parameter.get('schema', {}).get('default', '')))}</td>"
                                 f"<td>{e(parameter.get('description', schema.get('description', '')))}</td></tr>")
                parts.append("</table>")
            body = operation.get("requestBody")
            if body:
                types = ", ".join(f"<code>{e(t)}</code>" for t in body.get("content", {}))
                parts.append(f"<h3>Body</h3><p>{e(body.get('description', ''))} Content types: {types}.</p>")
            parts.append("<h3>Responses</h3><table><tr><th>status</th><th>type</th><th>meaning</th></tr>")
            for status, response in operation.get("responses", {}).items():
                types = ", ".join(response.get("content", {})) or "-"
                parts.append(f"<tr><td>{e(status)}</td><td><code>{e(types)}</code></td>"
                             f"<td>{e(response.get('description', ''))}</td></tr>")
            parts.append("</table></section>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>saliency serve: API</title>"
            "<link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/static/page.css\"></head>"
            f"<body class=\"docs\"><main>{''.join(parts)}</main></body></html>")
