"""Generated gRPC code for the bookstore's Recommendations service (do not edit by hand).

``recommendations_pb2`` holds the messages of protos/recommendations.proto
and ``recommendations_pb2_grpc`` the stub and servicer. Regenerate them with
``make protos`` after editing the .proto (see protos/generate.py for how and
why the output is committed).
"""
