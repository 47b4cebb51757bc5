"""Q8: the proposed minimal plan end to end (single ext_proc process, in-process request table).

Downstream: policy ext_proc (request headers SKIP, body BUFFERED) -> buffer -> router.
  Body reply: metadata sg{route, rid} + dummy header mutation + clear_route_cache; stores the parsed
  body in REQUESTS[rid]. Routes match sg.route; x-request-id := %DYNAMIC_METADATA(sg:rid)%; the
  app's credentials are removed at the route.
Routes: ns (non-stream, [b]), ns_fo (non-stream, [a]->[b]), s (stream, [b]), s_fo (stream, [a]->[b]);
  retry on 503 with refresh_cluster_on_retry. ExtProcPerRoute on the UPSTREAM filter picks the
  response mode: ns* -> response body BUFFERED, s* -> FULL_DUPLEX_STREAMED.
Clusters a, b: provider ext_proc (request headers SEND, body NONE) -> upstream_codec.
  Request-headers reply: CONTINUE_AND_REPLACE with this attempt's translation + :path + key
  (a always fails with 503 to force failover).
Prints the ProcessingRequest count per stream and per request.
"""

import asyncio
import json

import httpx
from google.protobuf import struct_pb2

import harness
from harness import API, T, bootstrap, cont, extproc_cluster, extproc_filter, hm, pb, ports, run, streamed, upstream_cluster, LOG, UPSTREAM

PER = f"{API}.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
REQUESTS: dict[str, dict] = {}


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    pol = extproc_filter("policy", {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
                                    "response_header_mode": "SKIP", "response_body_mode": "NONE"},
                         request_attributes=["request.path", "request.headers['content-type']"],
                         metadata_options={"receiving_namespaces": {"untyped": ["sg"]}})
    buf = {"name": "envoy.filters.http.buffer",
           "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    prov = extproc_filter("provider", {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                       "response_header_mode": "SKIP", "response_body_mode": "NONE"},
                          request_attributes=["upstream.request_attempt_count", "xds.cluster_name"],
                          forward_rules={"allowed_headers": {"patterns": [{"exact": "x-request-id"}]}})
    prov["name"] = "provider_extproc"

    def mode(resp):
        return {T: PER, "overrides": {"processing_mode": {
            "request_header_mode": "SEND", "request_body_mode": "NONE",
            "response_header_mode": "SKIP", "response_body_mode": resp}}}

    def route(name, clusters, resp):
        return {"name": name,
                "match": {"prefix": "/", "dynamic_metadata": [{"filter": "sg", "path": [{"key": "route"}], "value": {"string_match": {"exact": name}}}]},
                "request_headers_to_add": [{"header": {"key": "x-request-id", "value": "%DYNAMIC_METADATA(sg:rid)%"},
                                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                "request_headers_to_remove": ["authorization", "x-api-key"],
                "typed_per_filter_config": {"provider_extproc": mode(resp)},
                "route": {
                    "inline_cluster_specifier_plugin": {"extension": {
                        "name": "envoy.router.cluster_specifier_plugin.priority_group",
                        "typed_config": {T: f"{API}.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier",
                                         "priority_groups": [{"name": f"g{i}", "clusters": [{"cluster_name": c, "weight": 1}]} for i, c in enumerate(clusters)]}}},
                    "retry_policy": {"retry_on": "retriable-status-codes", "retriable_status_codes": [503], "num_retries": 1,
                                     "refresh_cluster_on_retry": True}}}

    routes = [route("ns", ["b"], "BUFFERED"), route("ns_fo", ["a", "b"], "BUFFERED"),
              route("s", ["b"], "FULL_DUPLEX_STREAMED"), route("s_fo", ["a", "b"], "FULL_DUPLEX_STREAMED"),
              {"name": "unrouted", "match": {"prefix": "/"}, "direct_response": {"status": 500}}]
    return bootstrap(lp, ap, [pol, buf], routes,
                     [extproc_cluster(sock_dir, 1), upstream_cluster("a", up, [prov]), upstream_cluster("b", up, [prov])])


def handler(stage, s, req, st):
    kind = s["kind"]
    if stage == "policy" and kind == "request_body":
        body = json.loads(req.request_body.body)
        rid = f"rid-{s['sid']}"
        REQUESTS[rid] = body
        route = ("s" if body.get("stream") else "ns") + ("_fo" if body.get("failover") else "")
        r = pb.ProcessingResponse()
        r.request_body.response.header_mutation.CopyFrom(hm({"x-sg": "1"}))
        r.request_body.response.clear_route_cache = True
        md = struct_pb2.Struct()
        md.update({"sg": {"route": route, "rid": rid}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    if stage == "provider" and kind == "request_headers":
        attrs = req.attributes["envoy.filters.http.ext_proc"].fields
        cluster = attrs["xds.cluster_name"].string_value
        attempt = int(attrs["upstream.request_attempt_count"].number_value)
        body = REQUESTS[s["headers"]["x-request-id"]]
        path = "/status/503" if cluster == "a" else ("/sse" if body.get("stream") else "/json")
        st["cluster"] = cluster
        r = pb.ProcessingResponse()
        c = r.request_headers.response
        c.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        c.header_mutation.CopyFrom(hm({":path": path, "x-api-key" if cluster == "a" else "authorization": f"key-{cluster}-{attempt}"},
                                      ["authorization" if cluster == "a" else "x-api-key"]))
        c.body_mutation.body = json.dumps({"for": cluster, "attempt": attempt, **body}).encode()
        return [r]
    if stage == "provider" and kind == "response_body":
        b = req.response_body
        if st.get("body_mode", {}).get("response_body") == "FULL_DUPLEX_STREAMED":
            return [streamed(kind, b.body.replace(b"data: ", b"data: [translated] "), b.end_of_stream)]
        r = pb.ProcessingResponse()
        r.response_body.response.body_mutation.body = b'{"translated": ' + b.body + b"}"
        return [r]
    return [cont(kind)]


CASES = [("non-stream", {"model": "m"}), ("non-stream+failover", {"model": "m", "failover": True}),
         ("stream", {"model": "m", "stream": True}), ("stream+failover", {"model": "m", "stream": True, "failover": True})]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for name, body in CASES:
            n0, u0 = len(LOG), len(UPSTREAM)
            with c.stream("POST", "/v1/chat/completions", json=body, headers={"authorization": "Bearer app"}) as r:
                reads = [ch for ch in r.iter_raw()]
            out.append((name, r.status_code, len(reads), b"".join(reads)[:90], LOG[n0:],
                        [(u["path"], {k: v for k, v in u["headers"].items() if k in ("authorization", "x-api-key")}) for u in UPSTREAM[u0:]]))
    return out


async def main():
    res, env = await run(build, handler, client)
    for name, code, nreads, head, msgs, ups in res:
        streams: dict = {}
        for e in msgs:
            streams.setdefault((e["sid"], e["stage"]), []).append(e["kind"])
        total = sum(len(v) for v in streams.values())
        print(f"{name}: status {code}, client reads {nreads}, body {head!r}")
        print(f"    ProcessingRequests: {total} on {len(streams)} gRPC streams")
        for (sid, stage), kinds in streams.items():
            summary = {}
            for k in kinds:
                summary[k] = summary.get(k, 0) + 1
            print(f"      stream {sid} {stage}: {summary}")
        for u in ups:
            print("    upstream:", u)
    print("\n".join(env.access()))


asyncio.run(main())
