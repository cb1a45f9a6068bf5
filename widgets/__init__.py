"""ipywidgets panels for the notebook loop (installed as ``clipiqa.widgets``).

* :class:`LabelPanel` - rate images on a named scale; autosave, skip, undo, resume, suggestions, zoom.
* :func:`review_grid` - a rater's labels as thumbnails grouped by rating, with file names.
* :class:`AdaptPanel` - adaptation settings, Run/Stop, live progress, loss and SRCC curves.
* :class:`ComparePanel` - with vs without QGR on identical splits: table, plots, gradient-cosine traces.
* :class:`AttributionViewer` - attribution maps before/after adaptation, overlay, diagnostics.
* :class:`LineDashboard` - a line's scores, reject rate, drift alarm, latest rejects and label queue.

Each panel is an ``ipywidgets.VBox`` of stock widgets (no front-end extension to build); its logic lives in
plain methods that code and tests call directly. Every panel shows a "random-init weights: scores are
meaningless" banner when the model is the random-init ``tiny`` smoke-test model.
"""
from .adapt import AdaptPanel
from .attribution import AttributionViewer
from .compare import CompareResult, ComparePanel
from .dashboard import LineDashboard
from .label import LabelPanel
from .review import review_grid, review_table

__all__ = ["LabelPanel", "review_grid", "review_table", "AdaptPanel", "ComparePanel", "CompareResult",
           "AttributionViewer", "LineDashboard"]
