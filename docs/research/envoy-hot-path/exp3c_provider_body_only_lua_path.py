"""Q3 follow-up (exp3c): as exp3b, plus an upstream Lua filter that sets :path from the metadata the
provider body reply wrote (header_mutation refuses :path). exp3b docstring follows.

Q3 follow-up: a ONE-message provider stage that receives the body itself (no shared process state).

Cluster 'p' upstream chain:
  ext_proc 'provider_extproc' (request headers SKIP, body BUFFERED; forwards sg, receives sg_up)
  -> envoy.filters.http.buffer        (holds the headers until the body reply, like exp1b downstream)
  -> envoy.filters.http.header_mutation  (x-path-wanted := %DYNAMIC_METADATA(sg_up:path)%, remove x-api-key;
     setting :path is refused at config load: ":-prefixed or host headers may not be modified")
  -> envoy.filters.http.credential_injector (Authorization from SDS file, prefix 'Bearer ')
  -> upstream_codec
Route retries once on 503: attempt 1's reply says path /status/503, attempt 2's /json.
"""

import asyncio
import os

import httpx
from google.protobuf import struct_pb2

import harness
from harness import API, T, bootstrap, cont, extproc_cluster, extproc_filter, hm, pb, ports, run, upstream_cluster, UPSTREAM, LOG

harness.LIMIT = 300


def build(sock_dir: str, up: int) -> dict:
    keys = os.path.join(sock_dir, "keys")
    os.makedirs(keys)
    with open(os.path.join(keys, "openai"), "w") as f:
        f.write("sk-one")
    with open(os.path.join(sock_dir, "openai.yaml"), "w") as f:
        f.write(f"""resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: openai
  generic_secret: {{secret: {{filename: {keys}/openai}}}}
""")
    lp, ap = ports()
    prov = extproc_filter("provider:p", {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
                                         "response_header_mode": "SKIP", "response_body_mode": "NONE"},
                          request_attributes=["upstream.request_attempt_count"],
                          metadata_options={"receiving_namespaces": {"untyped": ["sg_up"]}})
    prov["name"] = "provider_extproc"
    buf = {"name": "envoy.filters.http.buffer",
           "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    mut = {"name": "envoy.filters.http.header_mutation",
           "typed_config": {T: f"{API}.extensions.filters.http.header_mutation.v3.HeaderMutation",
                            "mutations": {"request_mutations": [
                                {"append": {"header": {"key": "x-path-wanted", "value": "%DYNAMIC_METADATA(sg_up:path)%"},
                                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                                {"remove": "x-api-key"}]}}}
    inj = {"name": "envoy.filters.http.credential_injector",
           "typed_config": {T: f"{API}.extensions.filters.http.credential_injector.v3.CredentialInjector",
                            "overwrite": True,
                            "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": {
                                T: f"{API}.extensions.http.injected_credentials.generic.v3.Generic",
                                "header_value_prefix": "Bearer ",
                                "credential": {"name": "openai", "sds_config": {"path_config_source": {
                                    "path": os.path.join(sock_dir, "openai.yaml"), "watched_directory": {"path": keys}}}}}}}}
    lua = {"name": "envoy.filters.http.lua",
           "typed_config": {T: f"{API}.extensions.filters.http.lua.v3.Lua",
                            "default_source_code": {"inline_string": """
function envoy_on_request(h)
  local md = h:streamInfo():dynamicMetadata():get("sg_up")
  if md ~= nil and md["path"] ~= nil then h:headers():replace(":path", md["path"]) end
end
"""}}}
    retry = {"retry_on": "retriable-status-codes", "retriable_status_codes": [503], "num_retries": 1}
    routes = [{"name": "p", "match": {"prefix": "/"}, "route": {"cluster": "p", "retry_policy": retry}}]
    return bootstrap(lp, ap, [], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up, [prov, buf, mut, lua, inj])])


def handler(stage, s, req, st):
    if s["kind"] == "request_body":
        a = req.attributes["envoy.filters.http.ext_proc"].fields["upstream.request_attempt_count"].number_value
        body = b'{"translated_for_attempt": %d}' % int(a)
        r = pb.ProcessingResponse()
        r.request_body.response.body_mutation.body = body
        md = struct_pb2.Struct()
        md.update({"sg_up": {"path": "/status/503" if a == 1 else "/json"}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    return [cont(s["kind"])]


def client(port: int):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/v1/chat/completions", content=b'{"model":"original"}',
                   headers={"content-type": "application/json", "authorization": "Bearer app", "x-api-key": "app"})
        return r.status_code


async def main():
    try:
        code, env = await run(build, handler, client)
    except RuntimeError as e:
        print("ENVOY FAILED:", str(e)[-1200:])
        return
    print("client status", code)
    for u in UPSTREAM:
        print("upstream saw:", u["path"], {k: v for k, v in u["headers"].items() if k in ("authorization", "x-api-key", "x-path-wanted", "content-length", "transfer-encoding")}, u["body"])
    harness.dump_log("ext_proc messages")
    print("\n".join(env.access()))
    print("\n".join(l for l in env.errors() if "[main]" not in l)[-1500:])


asyncio.run(main())
