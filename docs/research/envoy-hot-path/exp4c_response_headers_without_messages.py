"""Q4 follow-up: response headers such as x-sidegate-provider without a response-headers message.
Route response_headers_to_add with %UPSTREAM_CLUSTER% and %DYNAMIC_METADATA(sg_up:model)% (written by
the provider's response-body reply), plus a cluster upstream header_mutation adding a static
x-sg-provider response header. Provider ext_proc: request SKIP/NONE, response SKIP + BUFFERED."""
import asyncio
import httpx
from google.protobuf import struct_pb2
import harness
from harness import API, T, bootstrap, cont, extproc_cluster, extproc_filter, pb, ports, run, upstream_cluster

def build(sock_dir, up):
    lp, ap = ports()
    prov = extproc_filter("provider", {"request_header_mode": "SKIP", "request_body_mode": "NONE",
                                       "response_header_mode": "SKIP", "response_body_mode": "BUFFERED"},
                          metadata_options={"receiving_namespaces": {"untyped": ["sg_up"]}})
    mut = {"name": "envoy.filters.http.header_mutation",
           "typed_config": {T: f"{API}.extensions.filters.http.header_mutation.v3.HeaderMutation",
                            "mutations": {"response_mutations": [{"append": {"header": {"key": "x-sg-provider", "value": "provider-p"}}}]}}}
    routes = [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "p"},
               "response_headers_to_add": [{"header": {"key": "x-sg-cluster", "value": "%UPSTREAM_CLUSTER%"}},
                                           {"header": {"key": "x-sg-model", "value": "%DYNAMIC_METADATA(sg_up:model)%"}}]}]
    return bootstrap(lp, ap, [], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up, [mut, prov])])

def handler(stage, s, req, st):
    if s["kind"] == "response_body":
        r = cont("response_body")
        md = struct_pb2.Struct(); md.update({"sg_up": {"model": "claude-x"}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    return [cont(s["kind"])]

def client(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/json", content=b"{}")
        return r.status_code, {k: v for k, v in r.headers.items() if k.startswith("x-sg")}

async def main():
    res, env = await run(build, handler, client)
    print(res)
    harness.dump_log("messages")

asyncio.run(main())
