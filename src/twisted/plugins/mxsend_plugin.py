from twisted.application.service import ServiceMaker

mxsend = ServiceMaker("mxsend", "mxsend._service", "Deliver mail with mxsend", "mxsend")  # type: ignore[no-untyped-call]
