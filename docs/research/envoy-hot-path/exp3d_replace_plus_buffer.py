"""exp3d = exp3 with an upstream envoy.filters.http.buffer after the provider ext_proc (does it restore
content-length after CONTINUE_AND_REPLACE?). exp3 docstring follows.

Q3 + Q6: the provider stage (ext_proc as a cluster upstream filter), fewer messages.

One cluster 'p' with upstream chain: ext_proc(named 'provider_extproc') -> upstream_codec.
Routes pick the mode for that upstream filter through ExtProcPerRoute keyed by the upstream
filter's name (Q6):
  /skip/*    per-route override: request headers SKIP + body BUFFERED (body reply sets :path + key)
  /replace/* per-route override: request headers SEND + body NONE; the headers reply is
             CONTINUE_AND_REPLACE with :path + key + a new body (ONE message per attempt)
  /replace_cl/* same, also sets content-length in the header mutation
  /off/*     per-route disabled: true for the upstream filter
  /inherit/* no per-route config (filter config: SEND + BUFFERED)
Every route retries once on 503; attempt 1's rewrite points to /status/503 so attempt 2 runs.
"""

import asyncio

import httpx

import harness
from harness import (API, T, bootstrap, cont, dump_log, extproc_filter, extproc_cluster, hm, pb, ports, run,
                     upstream_cluster, UPSTREAM)

harness.LIMIT = 300
PER_ROUTE = f"{API}.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def mode(**kw):
    m = {"request_header_mode": "SEND", "request_body_mode": "NONE", "response_header_mode": "SKIP",
         "response_body_mode": "NONE"}
    m.update(kw)
    return m


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    f = extproc_filter("provider:p", mode(request_body_mode="BUFFERED"),
                       request_attributes=["upstream.request_attempt_count", "xds.route_name"])
    f["name"] = "provider_extproc"
    retry = {"retry_on": "retriable-status-codes", "retriable_status_codes": [503], "num_retries": 1}

    def route(prefix, per):
        r = {"name": prefix.strip("/"), "match": {"prefix": prefix}, "route": {"cluster": "p", "retry_policy": retry}}
        if per is not None:
            r["typed_per_filter_config"] = {"provider_extproc": {T: PER_ROUTE, **per}}
        return r

    routes = [
        route("/skip/", {"overrides": {"processing_mode": mode(request_header_mode="SKIP", request_body_mode="BUFFERED")}}),
        route("/replace/", {"overrides": {"processing_mode": mode()}}),
        route("/replace_cl/", {"overrides": {"processing_mode": mode()}}),
        route("/off/", {"disabled": True}),
        route("/inherit/", None),
    ]
    return bootstrap(lp, ap, [], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up, [f, {"name": "envoy.filters.http.buffer", "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}])])


def attempt(req) -> int:
    a = req.attributes.get("envoy.filters.http.ext_proc")
    v = a.fields.get("upstream.request_attempt_count") if a else None
    return int(v.number_value) if v else 0


def handler(stage, s, req, st):
    kind = s["kind"]
    if kind == "request_headers":
        st["attempt"] = attempt(req)
        st["route"] = s["headers"][":path"].split("/")[1]
    if kind == "request_body":
        st["attempt"] = st.get("attempt") or attempt(req)
    n = st.get("attempt", 0)
    path = "/status/503" if n == 1 else "/json"
    newbody = f'{{"translated_for_attempt": {n}}}'.encode()
    muts = {":path": path, "authorization": f"Bearer key-{n}"}
    if kind == "request_headers" and st.get("body_mode", {}).get("request_body") == "NONE":
        r = pb.ProcessingResponse()
        c = r.request_headers.response
        c.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        if st["route"] == "replace_cl":
            muts["content-length"] = str(len(newbody))
        c.header_mutation.CopyFrom(hm(muts))
        c.body_mutation.body = newbody
        return [r]
    if kind == "request_body":
        r = pb.ProcessingResponse()
        c = r.request_body.response
        c.header_mutation.CopyFrom(hm({**muts, "content-length": str(len(newbody))}))
        c.body_mutation.body = newbody
        return [r]
    return [cont(kind)]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for p in ("/replace/x",):
            n0 = len(UPSTREAM)
            r = c.post(p, content=b'{"model":"original"}', headers={"content-type": "application/json", "authorization": "Bearer app-key"})
            out.append((p, r.status_code, UPSTREAM[n0:]))
    return out


async def main():
    res, env = await run(build, handler, client)
    for p, code, ups in res:
        print(f"{p}: client status {code}; upstream requests:")
        for u in ups:
            print("     ", u["path"], {k: v for k, v in u["headers"].items() if k in ("authorization", "content-length", "transfer-encoding")}, "body:", u["body"])
    dump_log("ext_proc messages")
    print("\n".join(env.access()))



if __name__ == "__main__":
    asyncio.run(main())
