"""Waiting for a background run inside a notebook cell while the panel's buttons keep working.

Why this exists: a cell that blocks (``panel.run(block=True)``, what *Run All* executes) keeps the kernel busy,
and a busy kernel leaves every message from the browser in its queue until the cell ends, the *Stop* click
included. A blocking wait therefore has to serve widget events itself while it waits.

* Kernels that offer ``do_one_iteration`` (ipykernel 6 and the 7 releases that kept it): ``jupyter-ui-poll``'s
  ``ui_events()`` serves them; it also holds back the next cells' execute requests and replays them in order
  when the cell ends.
* ipykernel 7 kernels without ``do_one_iteration`` (shell messages reach the main thread through an in-process
  socket from the shell-channel thread): jupyter-ui-poll cannot serve those, so :class:`_MainShellEvents` reads
  that socket itself, handles widget messages (``comm_msg``) at once and sends every other message (the next
  cells of a Run All, completions, ...) back into the same queue, in their order, when the wait ends, so the
  kernel runs them as if nothing had happened.
* Outside a kernel (plain Python, tests, scripts): a plain join.

If serving events fails for any reason, the wait falls back to a plain join: Stop then waits for the cell, as
before, but the run itself is never harmed.
"""
from __future__ import annotations

from typing import Callable

POLL_SECONDS = 0.05  # how often the wait looks for a click (a Stop lands within one training step anyway)


def wait_serving_events(done: Callable[[], bool], join: Callable[[float | None], None]) -> None:
    """Wait until ``done()`` while serving the kernel's widget events (see the module docstring).
    ``join(timeout)`` waits for the work itself (a thread's join)."""
    kernel = _kernel()
    if kernel is None:
        join(None)
        return
    if hasattr(kernel, "do_one_iteration"):
        _wait_ui_poll(done, join)
        return
    events = _MainShellEvents.for_kernel(kernel)
    if events is None:
        join(None)
        return
    try:
        while not done():
            events.serve()
            join(POLL_SECONDS)
    except Exception:  # serving failed (an unexpected kernel): wait as before, Stop acts after the cell
        kernel.log.error("could not serve widget events during a blocking run", exc_info=True)
        join(None)
    finally:
        events.close()  # always: the held-back requests (the rest of a Run All) must reach the kernel


def _kernel():
    """The running IPython kernel, or None outside one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None)


def _wait_ui_poll(done, join) -> None:
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:  # the package is a dependency; a broken install still waits
        join(None)
        return
    with ui_events() as poll:
        while not done():
            poll(20)
            join(POLL_SECONDS)


class _MainShellEvents:
    """Serves widget messages to the main shell of an ipykernel 7 kernel from inside a running cell.

    Reads the in-process socket on which the shell-channel thread forwards the main shell's messages (the main
    thread's own reader cannot run while the cell blocks it). ``comm_msg`` (a click, a typed value) is handled
    at once, on this thread, exactly as the kernel would; everything else is held and, on :meth:`close`, sent
    back into the same queue by the shell-channel thread (the socket's owner), in arrival order."""

    def __init__(self, kernel, pair, io_loop):
        self.kernel = kernel
        self.pair = pair
        self.io_loop = io_loop
        self.held: list[list[bytes]] = []

    @classmethod
    def for_kernel(cls, kernel) -> "_MainShellEvents | None":
        thread = getattr(kernel, "shell_channel_thread", None)
        manager = getattr(thread, "manager", None)
        if manager is None or not hasattr(manager, "get_shell_channel_to_subshell_pair"):
            return None
        try:
            pair = manager.get_shell_channel_to_subshell_pair(None)
        except Exception:
            return None
        return cls(kernel, pair, thread.io_loop)

    def serve(self) -> None:
        import zmq
        while True:
            try:
                frames = self.pair.to_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not self._handle(frames):
                self.held.append(frames)

    def _handle(self, frames: list[bytes]) -> bool:
        """Handle a widget message now; False for anything else (held for after the cell)."""
        kernel, session = self.kernel, self.kernel.session
        try:
            idents, parts = session.feed_identities(frames, copy=True)
            header = session.deserialize(parts, content=False, copy=True)["header"]
        except Exception:  # e.g. the kernel's one-frame "stop aborting" marker: the kernel's business
            return False
        if header.get("msg_type") != "comm_msg":
            return False
        msg = session.deserialize(parts, content=True, copy=True)
        saved = (kernel._parent_ident["shell"], kernel.get_parent("shell"))
        kernel.set_parent(idents, msg, channel="shell")
        try:
            kernel.shell_handlers["comm_msg"](None, idents, msg)
        except Exception:  # a failing handler must not end the wait (the kernel logs it the same way)
            kernel.log.error("widget message handler failed during a blocking run", exc_info=True)
        finally:
            kernel.set_parent(*saved, channel="shell")  # the cell's outputs stay in the cell
        return True

    def close(self) -> None:
        """Give the held messages back to the kernel's queue, in order. A message the browser sends between the
        last read and this hand-back lands ahead of them (a click or a cell sent in that instant)."""
        try:
            self.serve()  # nothing may stay unread behind the held messages
        except Exception:
            self.kernel.log.error("could not read the last widget events of a blocking run", exc_info=True)
        held, self.held = self.held, []
        if held:
            sock = self.pair.from_socket  # owned by the shell-channel thread: send from there
            self.io_loop.add_callback(lambda: [sock.send_multipart(f) for f in held])
