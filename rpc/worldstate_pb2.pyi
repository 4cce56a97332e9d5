from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSISTENCY_UNSPECIFIED: _ClassVar[Consistency]
    LINEARIZABLE: _ClassVar[Consistency]
    SERIALIZABLE: _ClassVar[Consistency]
CONSISTENCY_UNSPECIFIED: Consistency
LINEARIZABLE: Consistency
SERIALIZABLE: Consistency

class GetParamRequest(_message.Message):
    __slots__ = ("world", "key", "consistency")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    world: str
    key: str
    consistency: Consistency
    def __init__(self, world: _Optional[str] = ..., key: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class Param(_message.Message):
    __slots__ = ("world", "key", "value", "revision", "create_revision", "version", "store_revision", "consistency")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    world: str
    key: str
    value: _struct_pb2.Value
    revision: int
    create_revision: int
    version: int
    store_revision: int
    consistency: Consistency
    def __init__(self, world: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., revision: _Optional[int] = ..., create_revision: _Optional[int] = ..., version: _Optional[int] = ..., store_revision: _Optional[int] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class PutParamRequest(_message.Message):
    __slots__ = ("world", "key", "value", "if_revision", "create_only", "must_exist")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    IF_REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    MUST_EXIST_FIELD_NUMBER: _ClassVar[int]
    world: str
    key: str
    value: _struct_pb2.Value
    if_revision: int
    create_only: bool
    must_exist: bool
    def __init__(self, world: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., if_revision: _Optional[int] = ..., create_only: _Optional[bool] = ..., must_exist: _Optional[bool] = ...) -> None: ...

class PutParamResponse(_message.Message):
    __slots__ = ("world", "key", "revision", "created")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    world: str
    key: str
    revision: int
    created: bool
    def __init__(self, world: _Optional[str] = ..., key: _Optional[str] = ..., revision: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteParamRequest(_message.Message):
    __slots__ = ("world", "key", "if_revision")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    IF_REVISION_FIELD_NUMBER: _ClassVar[int]
    world: str
    key: str
    if_revision: int
    def __init__(self, world: _Optional[str] = ..., key: _Optional[str] = ..., if_revision: _Optional[int] = ...) -> None: ...

class DeleteParamResponse(_message.Message):
    __slots__ = ("world", "key", "deleted", "store_revision")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    world: str
    key: str
    deleted: bool
    store_revision: int
    def __init__(self, world: _Optional[str] = ..., key: _Optional[str] = ..., deleted: _Optional[bool] = ..., store_revision: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("world", "prefix", "start_revision")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    world: str
    prefix: str
    start_revision: int
    def __init__(self, world: _Optional[str] = ..., prefix: _Optional[str] = ..., start_revision: _Optional[int] = ...) -> None: ...

class ParamChange(_message.Message):
    __slots__ = ("type", "key", "value", "revision")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[ParamChange.Type]
        PUT: _ClassVar[ParamChange.Type]
        DELETE: _ClassVar[ParamChange.Type]
    TYPE_UNSPECIFIED: ParamChange.Type
    PUT: ParamChange.Type
    DELETE: ParamChange.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: ParamChange.Type
    key: str
    value: _struct_pb2.Value
    revision: int
    def __init__(self, type: _Optional[_Union[ParamChange.Type, str]] = ..., key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("event_id", "entity", "source", "fields", "observed_at_ms")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    entity: str
    source: str
    fields: _containers.MessageMap[str, _struct_pb2.Value]
    observed_at_ms: int
    def __init__(self, event_id: _Optional[str] = ..., entity: _Optional[str] = ..., source: _Optional[str] = ..., fields: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., observed_at_ms: _Optional[int] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("world", "observations")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    world: str
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    def __init__(self, world: _Optional[str] = ..., observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ...) -> None: ...

class ObserveAck(_message.Message):
    __slots__ = ("replica", "accepted", "duplicates", "hlc", "token", "behind")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    replica: str
    accepted: int
    duplicates: _containers.RepeatedScalarFieldContainer[str]
    hlc: str
    token: str
    behind: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replica: _Optional[str] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[_Iterable[str]] = ..., hlc: _Optional[str] = ..., token: _Optional[str] = ..., behind: _Optional[_Iterable[str]] = ...) -> None: ...

class GetEntityRequest(_message.Message):
    __slots__ = ("world", "entity", "token", "wait_ms")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    world: str
    entity: str
    token: str
    wait_ms: int
    def __init__(self, world: _Optional[str] = ..., entity: _Optional[str] = ..., token: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class FieldState(_message.Message):
    __slots__ = ("value", "hlc", "node", "source", "event_id", "observed_at_ms")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Value
    hlc: str
    node: str
    source: str
    event_id: str
    observed_at_ms: int
    def __init__(self, value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., hlc: _Optional[str] = ..., node: _Optional[str] = ..., source: _Optional[str] = ..., event_id: _Optional[str] = ..., observed_at_ms: _Optional[int] = ...) -> None: ...

class Reflects(_message.Message):
    __slots__ = ("replica", "watermark", "hlc", "behind", "replication")
    class WatermarkEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    replica: str
    watermark: _containers.ScalarMap[str, str]
    hlc: str
    behind: _containers.RepeatedScalarFieldContainer[str]
    replication: _struct_pb2.Struct
    def __init__(self, replica: _Optional[str] = ..., watermark: _Optional[_Mapping[str, str]] = ..., hlc: _Optional[str] = ..., behind: _Optional[_Iterable[str]] = ..., replication: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("world", "entity", "fields", "observations_by_source", "observations_total", "reflects")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FieldState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FieldState, _Mapping]] = ...) -> None: ...
    class ObservationsBySourceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WORLD_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_BY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REFLECTS_FIELD_NUMBER: _ClassVar[int]
    world: str
    entity: str
    fields: _containers.MessageMap[str, FieldState]
    observations_by_source: _containers.ScalarMap[str, int]
    observations_total: int
    reflects: Reflects
    def __init__(self, world: _Optional[str] = ..., entity: _Optional[str] = ..., fields: _Optional[_Mapping[str, FieldState]] = ..., observations_by_source: _Optional[_Mapping[str, int]] = ..., observations_total: _Optional[int] = ..., reflects: _Optional[_Union[Reflects, _Mapping]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("world", "entity", "prefix", "after")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    world: str
    entity: str
    prefix: str
    after: str
    def __init__(self, world: _Optional[str] = ..., entity: _Optional[str] = ..., prefix: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class EntityChange(_message.Message):
    __slots__ = ("world", "entity", "fields", "deleted", "hlc", "node", "origin", "id")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    WORLD_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    world: str
    entity: str
    fields: _containers.MessageMap[str, _struct_pb2.Value]
    deleted: bool
    hlc: str
    node: str
    origin: str
    id: str
    def __init__(self, world: _Optional[str] = ..., entity: _Optional[str] = ..., fields: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., deleted: _Optional[bool] = ..., hlc: _Optional[str] = ..., node: _Optional[str] = ..., origin: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ModelQuery(_message.Message):
    __slots__ = ("world", "consistency", "query")
    WORLD_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    world: str
    consistency: Consistency
    query: _struct_pb2.Struct
    def __init__(self, world: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., query: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ModelAnswer(_message.Message):
    __slots__ = ("answer",)
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    answer: _struct_pb2.Struct
    def __init__(self, answer: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
