from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[Status]
    NO_HANDLER: _ClassVar[Status]
    TIMEOUT: _ClassVar[Status]
    UNAVAILABLE: _ClassVar[Status]
    REFUSED: _ClassVar[Status]
    REQUEUE: _ClassVar[Status]
    REJECT: _ClassVar[Status]
OK: Status
NO_HANDLER: Status
TIMEOUT: Status
UNAVAILABLE: Status
REFUSED: Status
REQUEUE: Status
REJECT: Status

class Frame(_message.Message):
    __slots__ = ("type", "pattern", "data", "id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    pattern: str
    data: bytes
    id: str
    def __init__(self, type: _Optional[str] = ..., pattern: _Optional[str] = ..., data: _Optional[bytes] = ..., id: _Optional[str] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplyFrame(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DispatchRequest(_message.Message):
    __slots__ = ("service", "method", "priority", "timeout_seconds", "max_retries", "envelope", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    service: str
    method: str
    priority: str
    timeout_seconds: float
    max_retries: int
    envelope: bytes
    headers: _containers.ScalarMap[str, str]
    def __init__(self, service: _Optional[str] = ..., method: _Optional[str] = ..., priority: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., max_retries: _Optional[int] = ..., envelope: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DispatchReply(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    def __init__(self, envelope: _Optional[bytes] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("hello", "subscribe", "unsubscribe", "publish", "send", "query", "dispatch", "response", "register_service", "unregister_service", "heartbeat", "cancel")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    REGISTER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    UNREGISTER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    subscribe: Interest
    unsubscribe: Interest
    publish: Frame
    send: Request
    query: Request
    dispatch: Request
    response: Response
    register_service: Service
    unregister_service: Interest
    heartbeat: Heartbeat
    cancel: Cancel
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., subscribe: _Optional[_Union[Interest, _Mapping]] = ..., unsubscribe: _Optional[_Union[Interest, _Mapping]] = ..., publish: _Optional[_Union[Frame, _Mapping]] = ..., send: _Optional[_Union[Request, _Mapping]] = ..., query: _Optional[_Union[Request, _Mapping]] = ..., dispatch: _Optional[_Union[Request, _Mapping]] = ..., response: _Optional[_Union[Response, _Mapping]] = ..., register_service: _Optional[_Union[Service, _Mapping]] = ..., unregister_service: _Optional[_Union[Interest, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("process_id",)
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    process_id: str
    def __init__(self, process_id: _Optional[str] = ...) -> None: ...

class Interest(_message.Message):
    __slots__ = ("pattern", "type", "id")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    type: str
    id: int
    def __init__(self, pattern: _Optional[str] = ..., type: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "frame", "timeout", "dispatch")
    ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    id: int
    frame: Frame
    timeout: float
    dispatch: DispatchRequest
    def __init__(self, id: _Optional[int] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., timeout: _Optional[float] = ..., dispatch: _Optional[_Union[DispatchRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("id", "status", "data", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: Status
    data: bytes
    message: str
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., data: _Optional[bytes] = ..., message: _Optional[str] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("name", "service_type", "version", "capabilities", "max_concurrent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    service_type: str
    version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    max_concurrent: int
    def __init__(self, name: _Optional[str] = ..., service_type: _Optional[str] = ..., version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., max_concurrent: _Optional[int] = ...) -> None: ...

class ServiceHealth(_message.Message):
    __slots__ = ("name", "healthy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    name: str
    healthy: bool
    def __init__(self, name: _Optional[str] = ..., healthy: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceHealth]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceHealth, _Mapping]]] = ...) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("welcome", "delivery", "result", "notice", "cancel")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    delivery: Delivery
    result: Result
    notice: Notice
    cancel: Cancel
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., delivery: _Optional[_Union[Delivery, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., notice: _Optional[_Union[Notice, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("hub_id", "heartbeat_interval", "max_frame_bytes")
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    hub_id: str
    heartbeat_interval: float
    max_frame_bytes: int
    def __init__(self, hub_id: _Optional[str] = ..., heartbeat_interval: _Optional[float] = ..., max_frame_bytes: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("id", "pattern", "type", "data", "deadline")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    id: int
    pattern: str
    type: str
    data: bytes
    deadline: float
    def __init__(self, id: _Optional[int] = ..., pattern: _Optional[str] = ..., type: _Optional[str] = ..., data: _Optional[bytes] = ..., deadline: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("id", "status", "data", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: Status
    data: bytes
    message: str
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., data: _Optional[bytes] = ..., message: _Optional[str] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("status", "message", "type")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    type: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...
