#!/usr/bin/env python3
"""A local stand-in for AWS Lambda, for the tests and `scripts/lambda-local`: the Invoke API that the driver calls and the
Runtime API that function processes poll, following their documented HTTP contracts.

- Invoke API: POST /2015-03-31/functions/{name}/invocations (RequestResponse). The answer is
  the function's response body, or its error with the X-Amz-Function-Error header.
- Runtime API (/2018-06-01): GET runtime/invocation/next (long poll; the event, with the
  Lambda-Runtime-Aws-Request-Id, Lambda-Runtime-Deadline-Ms, Lambda-Runtime-Invoked-Function-Arn
  and Lambda-Runtime-Trace-Id headers), POST runtime/invocation/{id}/response and
  POST runtime/invocation/{id}/error, POST runtime/init/error.

Function processes are kept warm, as Lambda keeps execution environments: an invocation goes
to an idle process of its function if there is one, and otherwise starts a new one (a cold
start) with a Runtime API endpoint of its own and the environment Lambda sets
(AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
AWS_LAMBDA_FUNCTION_VERSION, ...) on top of this process's. A process serves one invocation
at a time; after answering it polls for the next. A process that times out or dies is
discarded (its next invocation cold-starts another). GET /emulator/functions lists the
processes (pid, function, invocations served, busy), for tests that watch warm processes.
Every process is killed when this emulator ends.

Usage: lambda_emulator.py --handler PATH [--memory MB] [--timeout SECONDS]
Prints "invoke=HOST:PORT" once it listens, then serves until stdin closes.
"""

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVOKE_PREFIX = "/2015-03-31/functions/"
RUNTIME_PREFIX = "/2018-06-01/runtime/"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A function process killed after its answer drops its next poll: not an error.
        if isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class State:
    def __init__(self, handler, memory, timeout):
        self.handler = handler
        self.memory = memory
        self.timeout = timeout
        self.pending = queue.Queue()  # this endpoint's invocations (runtime servers only)
        self.lock = threading.Lock()
        self.waiting = {}  # request id -> invocation
        self.functions = []  # warm function processes (the invoke server only)


class Function:
    """One function process and its Runtime API endpoint."""

    def __init__(self, name, proc, runtime, own):
        self.name = name
        self.proc = proc
        self.runtime = runtime
        self.own = own  # the endpoint's state: its pending queue and waiting invocations
        self.busy = False
        self.invocations = 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.runtime.shutdown()
        self.runtime.server_close()


class Invocation:
    def __init__(self, function, payload, deadline_ms):
        self.id = str(uuid.uuid4())
        self.function = function
        self.payload = payload
        self.deadline_ms = deadline_ms
        self.done = threading.Event()
        self.status = None  # "ok" or "error"
        self.body = b""


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def reply(self, code, body=b"", headers=None):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length", "0") or "0")
            return self.rfile.read(n) if n else b""

        def do_POST(self):
            if self.path.startswith(INVOKE_PREFIX) and self.path.endswith("/invocations"):
                return self.invoke()
            if self.path.startswith(RUNTIME_PREFIX + "invocation/"):
                return self.answer()
            if self.path == RUNTIME_PREFIX + "init/error":
                sys.stderr.write("function init error: %s\n" % self.body().decode(errors="replace"))
                return self.reply(202, b"{}")
            self.reply(404, b'{"message":"unknown path"}')

        def do_GET(self):
            if self.path == RUNTIME_PREFIX + "invocation/next":
                return self.next()
            if self.path == "/emulator/functions":
                with state.lock:
                    listing = [{"pid": f.proc.pid, "function": f.name, "invocations": f.invocations, "busy": f.busy}
                               for f in state.functions]
                return self.reply(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
            self.reply(404, b'{"message":"unknown path"}')

        def invoke(self):
            function = self.path[len(INVOKE_PREFIX):-len("/invocations")]
            payload = self.body()
            deadline_ms = int((time.time() + state.timeout) * 1000)
            inv = Invocation(function, payload, deadline_ms)
            fn = None
            with state.lock:
                for f in state.functions:
                    if f.name == function and not f.busy and f.proc.poll() is None:
                        fn = f
                        break
                if fn is not None:
                    fn.busy = True
            if fn is None:
                fn = self.cold_start(function)
            fn.invocations += 1
            with fn.own.lock:
                fn.own.waiting[inv.id] = inv
            fn.own.pending.put(inv)
            finished = False
            end = time.time() + state.timeout + 5
            while time.time() < end and fn.proc.poll() is None:
                if inv.done.wait(0.05):
                    finished = True
                    break
            with state.lock:
                if finished and fn.proc.poll() is None:
                    fn.busy = False  # stays warm for the next invocation
                else:
                    state.functions.remove(fn)
            if not finished:
                died = fn.proc.poll() is not None
                fn.stop()
                if died:
                    body = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": "RequestId: %s Error: Runtime exited with error: exit status %s" % (inv.id, fn.proc.returncode)})
                else:
                    body = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after %s seconds" % state.timeout})
                return self.reply(200, body.encode(), {"X-Amz-Function-Error": "Unhandled", "Content-Type": "application/json"})
            headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "$LATEST"}
            if inv.status == "error":
                headers["X-Amz-Function-Error"] = "Unhandled"
            self.reply(200, inv.body, headers)

        def cold_start(self, function):
            own = State(state.handler, state.memory, state.timeout)
            runtime = Server(("127.0.0.1", 0), make_handler(own))
            threading.Thread(target=runtime.serve_forever, daemon=True).start()
            env = dict(os.environ)
            env.update({
                "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % runtime.server_address[1],
                "AWS_LAMBDA_FUNCTION_NAME": function,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(state.memory),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + function,
                "AWS_LAMBDA_LOG_STREAM_NAME": str(uuid.uuid4()),
            })
            proc = subprocess.Popen([state.handler], env=env, stdin=subprocess.DEVNULL)
            fn = Function(function, proc, runtime, own)
            fn.busy = True
            with state.lock:
                state.functions.append(fn)
            return fn

        def next(self):
            inv = state.pending.get()
            self.reply(200, inv.payload, {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": inv.id,
                "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:000000000000:function:" + inv.function,
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
            })

        def answer(self):
            rest = self.path[len(RUNTIME_PREFIX + "invocation/"):]
            request_id, _, kind = rest.partition("/")
            body = self.body()
            with state.lock:
                inv = state.waiting.get(request_id)
            if inv is None or kind not in ("response", "error"):
                return self.reply(400, b'{"message":"unknown invocation"}')
            inv.status = "ok" if kind == "response" else "error"
            inv.body = body
            inv.done.set()
            self.reply(202, b"{}")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--handler", required=True)
    ap.add_argument("--memory", type=int, default=2048)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    state = State(args.handler, args.memory, args.timeout)
    invoke = Server(("127.0.0.1", 0), make_handler(state))
    threading.Thread(target=invoke.serve_forever, daemon=True).start()
    print("invoke=127.0.0.1:%d" % invoke.server_address[1], flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin (or dies)
    finally:
        with state.lock:
            for f in state.functions:
                f.proc.kill()


if __name__ == "__main__":
    main()
