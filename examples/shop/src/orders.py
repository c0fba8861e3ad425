"""Order handlers: plain Lambda handlers, as AWS Lambda runs them."""

import json
import os


def _json(status, body):
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def list_orders(event, context):
    return _json(200, {
        "orders": [{"id": "1001"}, {"id": "1002"}],
        "table": (event.get("stageVariables") or {}).get("table"),
        "version": os.environ.get("SHOP_VERSION", "v1"),
    })


def get_order(event, context):
    order_id = (event.get("pathParameters") or {}).get("id")
    if order_id is None:
        return _json(400, {"message": "missing order id"})
    return _json(200, {"id": order_id, "version": os.environ.get("SHOP_VERSION", "v1")})


def create_order(event, context):
    try:
        order = json.loads(event.get("body") or "{}")
    except json.JSONDecodeError:
        return _json(400, {"message": "body must be JSON"})
    return _json(201, {"created": order, "requestId": context.aws_request_id})
