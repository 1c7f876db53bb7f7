"""Python client for the Training File Service.

The generated protobuf and gRPC code lives in ``trainingfiles.v1``; this package will hold
the hand-written client on top of it.
"""

__all__: list[str] = []
