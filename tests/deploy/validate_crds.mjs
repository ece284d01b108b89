// Validates custom resources against the generated models of @kubernetes-models/* (installed by .ci/tools.sh).
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, status: "valid"|"invalid"|"unknown", error}.
// Usage: node validate_crds.mjs <node_modules dir>  < objects.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const packages = {
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "networking.istio.io": "@kubernetes-models/istio",
};
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = obj.apiVersion.split("/");
  const result = { kind: obj.kind, name: obj.metadata?.name, apiVersion: obj.apiVersion, status: "unknown", error: null };
  if (packages[group] && version) {
    const file = join(modules, packages[group], group, version, `${obj.kind}.js`);
    let Model = null;
    try {
      Model = (await import(pathToFileURL(file).href))[obj.kind];
    } catch (e) {
      result.error = `no model: ${e.message}`;
    }
    if (Model) {
      try {
        new Model(obj).validate();
        result.status = "valid";
      } catch (e) {
        result.status = "invalid";
        result.error = e.message;
      }
    }
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
