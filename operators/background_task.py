"""One way for a preferences operator to wait for work that runs outside Blender's main thread.

Install PyTorch (a pip subprocess), Download Weights and Locate Weights (threads) all take
minutes. In the UI the operator goes modal and polls the work on a 0.5 s timer, so Blender stays
responsive and the preferences show progress; Esc asks the work to stop. Headless there is no
event loop (timers never fire), so the operator waits in place instead.
"""

from __future__ import annotations

import bpy


def redraw_preferences(context) -> None:
    """Redraw open preferences windows (progress shown there changed)."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


class BackgroundTaskOperator:
    """Mixin for an operator whose work already runs in a thread or subprocess.

    A subclass starts its work, then returns :meth:`_wait_or_poll` from ``execute``, and
    provides:

    * ``_task_running() -> bool``: whether the work is still going (polled on each timer tick);
    * ``_task_wait()``: block until it ends (headless only);
    * ``_task_cancel()``: ask it to stop (Esc);
    * ``_finish(context) -> set``: read the outcome, report it, return the operator result.
    """

    _timer = None

    def _wait_or_poll(self, context) -> set:
        if bpy.app.background:
            self._task_wait()
            return self._finish(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self._task_cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        redraw_preferences(context)
        if self._task_running():
            return {"PASS_THROUGH"}
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        return self._finish(context)
