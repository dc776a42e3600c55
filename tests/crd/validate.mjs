// Reads rendered manifests (a JSON array) on stdin; prints one line per custom resource:
// "<kind>/<name> ok" or "<kind>/<name> INVALID <message>". Unknown kinds are reported, not skipped.
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { ScaledObject, TriggerAuthentication, ServiceMonitor, PrometheusRule };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const doc of JSON.parse(input)) {
  const label = `${doc.kind}/${doc.metadata && doc.metadata.name}`;
  const Model = models[doc.kind];
  if (!Model) {
    console.log(`${label} UNKNOWN`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${label} ok`);
  } catch (err) {
    console.log(`${label} INVALID ${String(err.message).replace(/\n/g, " ")}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
