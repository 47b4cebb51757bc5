"""Q5 follow-up: does a credential injected by attempt 1's cluster leak into attempt 2 (another cluster)?
Route: priority groups [anth] -> [oai], retry on 503, refresh_cluster_on_retry.
anth chain: lua (:path=/status/503 so attempt 1 fails) -> injector x-api-key (ak-one) -> codec
oai chain:  [optional header_mutation removing x-api-key] -> injector Authorization 'Bearer sk-one' -> codec
Run plain, then with argv[1]=scrub (each cluster removes the other providers' credential headers),
and the route removes the app's authorization/x-api-key (request_headers_to_remove)."""
import asyncio, os, sys
import httpx
import harness
from harness import API, T, bootstrap, extproc_cluster, ports, run, upstream_cluster, UPSTREAM

SCRUB = sys.argv[1:] == ["scrub"]

def secret(sock_dir, name, value):
    keys = os.path.join(sock_dir, "keys")
    os.makedirs(keys, exist_ok=True)
    open(os.path.join(keys, name), "w").write(value)
    p = os.path.join(sock_dir, f"{name}.yaml")
    open(p, "w").write(f"""resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  generic_secret: {{secret: {{filename: {keys}/{name}}}}}
""")
    return {"name": name, "sds_config": {"path_config_source": {"path": p, "watched_directory": {"path": keys}}}}

def injector(cred, header=None, prefix=None):
    g = {T: f"{API}.extensions.http.injected_credentials.generic.v3.Generic", "credential": cred}
    if header: g["header"] = header
    if prefix: g["header_value_prefix"] = prefix
    return {"name": "envoy.filters.http.credential_injector",
            "typed_config": {T: f"{API}.extensions.filters.http.credential_injector.v3.CredentialInjector",
                             "overwrite": True, "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": g}}}

def scrub(*hs):
    return {"name": "envoy.filters.http.header_mutation",
            "typed_config": {T: f"{API}.extensions.filters.http.header_mutation.v3.HeaderMutation",
                             "mutations": {"request_mutations": [{"remove": h} for h in hs]}}}

LUA503 = {"name": "envoy.filters.http.lua", "typed_config": {T: f"{API}.extensions.filters.http.lua.v3.Lua",
          "default_source_code": {"inline_string": 'function envoy_on_request(h) h:headers():replace(":path", "/status/503") end'}}}
LUAJSON = {"name": "envoy.filters.http.lua", "typed_config": {T: f"{API}.extensions.filters.http.lua.v3.Lua",
          "default_source_code": {"inline_string": 'function envoy_on_request(h) h:headers():replace(":path", "/json") end'}}}

def build(sock_dir, up):
    lp, ap = ports()
    anth = [LUA503] + ([scrub("authorization")] if SCRUB else []) + [injector(secret(sock_dir, "anthropic", "ak-one"), "x-api-key")]
    oai = [LUAJSON] + ([scrub("x-api-key")] if SCRUB else []) + [injector(secret(sock_dir, "openai", "sk-one"), None, "Bearer ")]
    route = {"name": "r", "match": {"prefix": "/"}, "route": {
        "inline_cluster_specifier_plugin": {"extension": {"name": "envoy.router.cluster_specifier_plugin.priority_group",
            "typed_config": {T: f"{API}.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier",
                             "priority_groups": [{"name": "g0", "clusters": [{"cluster_name": "anth", "weight": 1}]},
                                                 {"name": "g1", "clusters": [{"cluster_name": "oai", "weight": 1}]}]}}},
        "retry_policy": {"retry_on": "retriable-status-codes", "retriable_status_codes": [503], "num_retries": 1,
                         "refresh_cluster_on_retry": True}}}
    if SCRUB:
        route["request_headers_to_remove"] = ["authorization", "x-api-key"]
    return bootstrap(lp, ap, [], [route], [extproc_cluster(sock_dir, 1), upstream_cluster("anth", up, anth), upstream_cluster("oai", up, oai)])

def client(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        return c.post("/v1/x", content=b"{}", headers={"authorization": "Bearer app-key", "x-api-key": "app-key"}).status_code

async def main():
    try:
        code, env = await run(build, lambda *a: [], client)
    except RuntimeError as e:
        print("ENVOY FAILED", str(e)[-1500:]); return
    print("scrub" if SCRUB else "plain", "client status", code)
    for u in UPSTREAM:
        print("  upstream attempt:", u["path"], {k: v for k, v in u["headers"].items() if k in ("authorization", "x-api-key")})
    print("\n".join(env.access()))

asyncio.run(main())
