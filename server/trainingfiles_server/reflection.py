"""Server reflection that serves the contract with its comments.

grpcio-reflection answers from a descriptor pool, whose descriptors have lost the
comments (source info), and cannot find the file of a method
(`trainingfiles.v1.TrainingFileService.CreateTrainingFile`: "Symbol not found"). Here
the files come from the descriptor set `scripts/generate.py` writes with source info,
as protoc produced them, and a symbol is looked up by its top-level name, so
`grpcurl describe` prints the documentation of the service, each rpc and each message.
Health and reflection are served from their generated modules (they carry no comments).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from google.protobuf import descriptor_database, descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import _async, reflection_pb2, reflection_pb2_grpc

DESCRIPTOR_SET = "descriptor_set.binpb"


def contract_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The contract's files with their comments, imports included (generated).

    protoc records every field's `json_name`; grpcurl then writes JSON in lowerCamelCase.
    They are left out, as grpcio-reflection leaves them out, so grpcurl keeps the field
    names of the contract (`training_file`), as the README's examples use them.
    """
    data = resources.files("trainingfiles.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    files = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
    for file in files:
        pending = list(file.message_type)
        while pending:
            message = pending.pop()
            pending.extend(message.nested_type)
            for field in [*message.field, *message.extension]:
                field.ClearField("json_name")
    return files


def _module_files(*modules: Any) -> list[descriptor_pb2.FileDescriptorProto]:
    files = []
    for module in modules:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return files


class DocumentedReflection(_async.ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection.v1alpha answered from file descriptors kept as serialized."""

    def __init__(self, service_names: Iterable[str]) -> None:
        super().__init__(service_names)
        self._database = descriptor_database.DescriptorDatabase()
        self._serialized: dict[str, bytes] = {}
        self._dependencies: dict[str, list[str]] = {}
        for proto in [*contract_files(), *_module_files(health_pb2, reflection_pb2)]:
            if proto.name in self._serialized:
                continue
            self._database.Add(proto)
            self._serialized[proto.name] = proto.SerializeToString()
            self._dependencies[proto.name] = list(proto.dependency)

    def _respond(self, request: Any, name: str) -> Any:
        """The file and every file it depends on, transitively, the file first."""
        names, pending = [], [name]
        while pending:
            current = pending.pop()
            if current not in names:
                names.append(current)
                pending.extend(self._dependencies[current])
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._serialized[n] for n in names]
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        if filename not in self._serialized:
            return super()._file_by_filename(request, filename)
        return self._respond(request, filename)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            proto = self._database.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._respond(request, proto.name)


def enable(service_names: Iterable[str], server: Any) -> None:
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        DocumentedReflection(service_names), server
    )
