"""inscope inside the lab's own acquisition software.

* :mod:`inscope.integrations.pycromanager_processor`: a pycro-manager ``image_process_fn``
  that writes the boxes into each image's metadata and can queue follow-up events (e.g. a
  z-stack at each detected cell).
* :mod:`inscope.integrations.pymmcore_plus_mda`: a pymmcore-plus ``frameReady`` handler and
  an event-driven MDA in which detections add ``useq.MDAEvent`` s.

Both share :func:`inscope.integrations.common.detect_image`: one camera image plus where the
stage was -> a :class:`~inscope.acquisition.Frame`, the detector's boxes, and the JSON-able
record (pixels and stage µm) that the ZMQ stream also publishes.
"""
