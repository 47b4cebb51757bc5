"""Lead (Q8): zero ext_proc messages for routing. Does envoy.filters.http.json_to_metadata, put before
the router, let routes match on the body's model and stream fields (dynamic metadata)?"""
import asyncio
import httpx
import harness
from harness import API, T, bootstrap, extproc_cluster, ports, run, upstream_cluster, UPSTREAM

def build(sock_dir, up):
    lp, ap = ports()
    j2m = {"name": "envoy.filters.http.json_to_metadata",
           "typed_config": {T: f"{API}.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
                            "request_rules": {"rules": [
                                {"selectors": [{"key": "model"}], "on_present": {"metadata_namespace": "sg", "key": "model"}},
                                {"selectors": [{"key": "stream"}], "on_present": {"metadata_namespace": "sg", "key": "stream"},
                                 "on_missing": {"metadata_namespace": "sg", "key": "stream", "value": {"bool_value": False}}}]}}}
    def md(model):
        return [{"filter": "sg", "path": [{"key": "model"}], "value": {"string_match": {"exact": model}}}]
    routes = [{"name": "gpt", "match": {"prefix": "/", "dynamic_metadata": md("gpt-x")}, "route": {"cluster": "p"},
               "request_headers_to_add": [{"header": {"key": "x-went", "value": "gpt stream=%DYNAMIC_METADATA(sg:stream)%"}}]},
              {"name": "unrouted", "match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "unknown model"}}}]
    return bootstrap(lp, ap, [j2m], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up)])

def client(port):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for body in (b'{"model":"gpt-x","stream":true}', b'{"model":"other"}', b'not json'):
            n0 = len(UPSTREAM)
            r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            out.append((body, r.status_code, UPSTREAM[n0]["headers"].get("x-went") if len(UPSTREAM) > n0 else r.text[:40]))
    return out

async def main():
    try:
        res, env = await run(build, lambda *a: [], client)
    except RuntimeError as e:
        print("ENVOY FAILED", str(e)[-800:]); return
    for r in res: print(r)
    print("\n".join(env.access()))

asyncio.run(main())
