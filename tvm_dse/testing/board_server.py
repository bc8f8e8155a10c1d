"""TVM's RPC server for a board, kept serving when a session ends with an error.

In TVM 0.27, a session whose worker exits with an error (a client killed mid-session, a kernel that
crashes the worker) raises out of the server's listen loop: the process lives on but never serves or
re-registers again. This wrapper logs such a session and goes on serving. It runs on the board's own
Python, which has the TVM runtime but not tvm_dse; its arguments are ``tvm.exec.rpc_server``'s.
"""

import runpy
import sys

import tvm.rpc.server as server

_serve_one_session = server._serving


def _serving(*args, **kwargs):
    try:
        _serve_one_session(*args, **kwargs)
    except RuntimeError as error:
        print(f"session ended with an error, still serving: {error}", file=sys.stderr, flush=True)


server._serving = _serving
runpy.run_module("tvm.exec.rpc_server", run_name="__main__", alter_sys=True)
