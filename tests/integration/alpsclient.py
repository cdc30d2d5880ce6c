"""An independent client of the alps wire protocol, for tests.

It shares no code with the C client: messages are built with python3-protobuf
from proto/*.proto (compiled by protoc at session start), frames with struct.
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile

_PB = None


def load_proto(srcdir):
    """Compile proto/*.proto with protoc into a temp dir and import them."""
    global _PB
    if _PB is not None:
        return _PB
    out = tempfile.mkdtemp(prefix="alps-pb-")
    os.chmod(out, 0o755)    # readable by clients run as other users
    protos = [os.path.join("proto", p) for p in
              ("alps.proto", "image.proto", "job.proto", "node.proto")]
    subprocess.run(["protoc", "--proto_path=" + srcdir, "--python_out=" + out] + protos,
                   check=True)
    open(os.path.join(out, "proto", "__init__.py"), "w").close()
    sys.path.insert(0, out)
    from proto import alps_pb2  # noqa: E402
    _PB = alps_pb2
    return _PB


class Conn:
    """One connection to alpsd speaking length-prefixed protobuf frames."""

    def __init__(self, path, timeout=10.0):
        self.pb = _PB
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.next_id = 1
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, payload):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def send(self, req):
        if not req.id:
            req.id = self.next_id
            self.next_id += 1
        self.send_frame(req.SerializeToString())
        return req.id

    def recv_frame(self):
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        n = struct.unpack(">I", self.buf[:4])[0]
        payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return payload

    def recv(self):
        payload = self.recv_frame()
        if payload is None:
            return None
        resp = self.pb.Response()
        resp.ParseFromString(payload)
        return resp

    def call(self, req):
        """Send req and return (progress responses, final response)."""
        rid = self.send(req)
        progress = []
        while True:
            resp = self.recv()
            if resp is None:
                raise ConnectionError("alpsd closed the connection")
            assert resp.id in (rid, 0), (resp.id, rid)
            if resp.final:
                return progress, resp
            progress.append(resp)

    def hello(self, version=None):
        req = self.pb.Request()
        req.hello.protocol_version = (self.pb.PROTOCOL_VERSION_CURRENT
                                      if version is None else version)
        req.hello.client = "pytest"
        return self.call(req)[1]

    def status(self):
        req = self.pb.Request()
        req.status.SetInParent()
        return self.call(req)[1]
