"""Templates of the python-backend models that ``build-repo`` writes as ``<model>/1/model.py``.

They run inside Triton's python backend (they import ``triton_python_backend_utils``), not here.
"""
