"""The Open Inference Protocol (KServe v2), in one package.

- ``wire``: the transport-neutral types (tensors, requests, responses) and the checks of every
  field; ``binary``: the binary form of tensors; ``http_codec`` and ``grpc_codec``: the two
  transports' encodings.
- ``outputs``: what a model offers as v2 outputs, what each costs, how each is decoded.
- ``protocol``: the core (metadata, config, readiness, statistics, repository, inference) over
  ``PredictionService``, the one path to the forward pass that ``/v1`` takes too.
- ``rest`` and ``grpc_server``: thin HTTP routes and a thin gRPC servicer with one interceptor.
"""
