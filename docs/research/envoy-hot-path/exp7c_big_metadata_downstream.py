"""Q7 follow-up: is the Envoy 1.40 segfault with >64 KiB forwarded metadata specific to the upstream
ext_proc? Here the receiver is a second ROUTER-LEVEL ext_proc (after the buffer filter) forwarding sg.
argv[1] = size of the metadata string."""
import asyncio, sys
import httpx
from google.protobuf import struct_pb2
import harness
from harness import API, T, bootstrap, cont, extproc_cluster, extproc_filter, hm, pb, ports, run, upstream_cluster, LOG

BIG = int(sys.argv[1])

def build(sock_dir, up):
    lp, ap = ports()
    pol = extproc_filter("policy", {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
                                    "response_header_mode": "SKIP", "response_body_mode": "NONE"},
                         metadata_options={"receiving_namespaces": {"untyped": ["sg"]}})
    pol["name"] = "policy"
    buf = {"name": "envoy.filters.http.buffer", "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    second = extproc_filter("second", {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                       "response_header_mode": "SKIP", "response_body_mode": "NONE"},
                            metadata_options={"forwarding_namespaces": {"untyped": ["sg"]}})
    second["name"] = "second"
    return bootstrap(lp, ap, [pol, buf, second], [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "p"}}],
                     [extproc_cluster(sock_dir, 1), upstream_cluster("p", up)])

def handler(stage, s, req, st):
    if stage == "policy" and s["kind"] == "request_body":
        r = cont("request_body")
        md = struct_pb2.Struct(); md.update({"sg": {"big": "x" * BIG}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    if stage == "second":
        sg = req.metadata_context.filter_metadata.get("sg")
        s["big_len"] = len(sg.fields["big"].string_value) if sg else -1
    return [cont(s["kind"])]

def client(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        try:
            return c.post("/json", content=b"{}").status_code
        except httpx.HTTPError as e:
            return repr(e)[:60]

async def main():
    res, env = await run(build, handler, client)
    print("BIG", BIG, "client:", res, "second stage saw:", [e.get("big_len") for e in LOG if e["stage"] == "second"],
          "segfault:", any("Segmentation" in l for l in env.errors()))

asyncio.run(main())
