"""kfaas Python runtime: loads a `module.function` handler from LAMBDA_TASK_ROOT and serves it
through the Lambda Runtime API at AWS_LAMBDA_RUNTIME_API, one invocation at a time.

Standard library only. Behaviour follows AWS's runtime interface client (awslambdaric): the
`Runtime.*` init error types, the error shape `{errorMessage, errorType, requestId,
stackTrace}`, a context object with the usual attributes and `get_remaining_time_in_millis()`,
and `logging` records prefixed with level, time and request id.
"""

import http.client
import importlib
import json
import logging
import os
import sys
import time
import traceback

BASE = "/2018-06-01/runtime"
_request_id = None


class Fault(Exception):
    """An init failure reported with one of Lambda's `Runtime.*` error types."""

    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


class RuntimeApi:
    """A keep-alive connection to the Runtime API, reopened after a failure."""

    def __init__(self, address):
        self.address = address
        self.conn = http.client.HTTPConnection(address)

    def call(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            try:
                self.conn.request(method, BASE + path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response.status, response.headers, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.address)
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def post_error(self, path, error):
        body = json.dumps(error).encode()
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Function-Error-Type": error["errorType"],
        }
        return self.call("POST", path, body, headers)


class LambdaContext:
    """The context object handlers receive, as awslambdaric's."""

    def __init__(self, headers):
        env = os.environ
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)
        client_context = headers.get("Lambda-Runtime-Client-Context")
        identity = headers.get("Lambda-Runtime-Cognito-Identity")
        self.client_context = json.loads(client_context) if client_context else None
        self.identity = json.loads(identity) if identity else None

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, message):
        sys.stdout.write(str(message))


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _request_id
        return True


def setup_logging():
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    handler.formatter.converter = time.gmtime
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        root.setLevel(level.upper())


def load_handler(task_root, handler):
    """Imports `pkg.module.function` (or `dir/module.function`) from the task root."""
    sys.path.insert(0, task_root)
    try:
        module_path, function_name = handler.rsplit(".", 1)
    except ValueError:
        raise Fault("Runtime.MalformedHandlerName", f"Bad handler '{handler}': expected module.function")
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise Fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}")
    except SyntaxError as e:
        raise Fault("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}")
    function = getattr(module, function_name, None)
    if not callable(function):
        raise Fault("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return function


def error_shape(exc, request_id=None, skip_frames=0):
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    error = {
        "errorMessage": str(exc),
        "errorType": getattr(exc, "error_type", None) or type(exc).__name__,
        "stackTrace": traceback.format_list(traceback.extract_tb(tb)),
    }
    if request_id:
        error["requestId"] = request_id
    return error


def report(error):
    sys.stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")


TRACE_VAR = "_X_AMZN_TRACE_ID"


def set_trace_env(trace):
    """Puts this invocation's X-Ray trace in os.environ (or takes it out).

    It changes with every invocation. Through os.environ's setter it would go to setenv(3), and
    glibc keeps every value ever set: 107 MB per million invocations, measured. So it is kept in
    os.environ's own mapping only; Python code sees it, a child process started without an
    explicit env does not (pass env=os.environ for that).
    """
    key = os.environ.encodekey(TRACE_VAR)
    if trace:
        os.environ._data[key] = os.environ.encodevalue(trace)
    else:
        os.environ._data.pop(key, None)


def main():
    global _request_id
    api = RuntimeApi(os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"))
    setup_logging()
    try:
        handler = load_handler(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()), os.environ.get("_HANDLER", ""))
    except Exception as e:  # noqa: BLE001 - every init failure is reported to Lambda
        error = error_shape(e)
        report(error)
        api.post_error("/init/error", error)
        sys.exit(1)
    while True:
        status, headers, body = api.call("GET", "/invocation/next")
        if status != 200:
            raise RuntimeError(f"/next answered {status}: {body!r}")
        request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        _request_id = request_id
        set_trace_env(headers.get("Lambda-Runtime-Trace-Id"))
        path = f"/invocation/{request_id}"
        try:
            event = json.loads(body) if body else None
            result = handler(event, LambdaContext(headers))
        except Exception as e:  # noqa: BLE001 - a handler error is the invocation's result
            error = error_shape(e, request_id, skip_frames=1)
            report(error)
            api.post_error(path + "/error", error)
            continue
        try:
            payload = json.dumps(result).encode()
        except (TypeError, ValueError) as e:
            error = {"errorMessage": f"Unable to marshal response: {e}", "errorType": "Runtime.MarshalError",
                     "requestId": request_id, "stackTrace": []}
            report(error)
            api.post_error(path + "/error", error)
            continue
        api.call("POST", path + "/response", payload, {"Content-Type": "application/json"})
        _request_id = None


if __name__ == "__main__":
    main()
