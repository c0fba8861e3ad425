"""Serves anything under /files/{proxy+}: shows the greedy path parameter."""

import json


def handler(event, context):
    rest = (event.get("pathParameters") or {}).get("proxy", "")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"file": rest, "segments": [s for s in rest.split("/") if s]}),
    }
