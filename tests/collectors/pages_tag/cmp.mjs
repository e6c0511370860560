// A TCF v2.2 CMP made of IAB's reference code (a page imports it after its import map): @iabtcf/cmpapi answers window.__tcfapi,
// @iabtcf/core encodes the visitor's choices. ?tc= sets the state the page opens with:
// absent, the banner shows (first visit); "1,3,4" a decision taken earlier; "null", GDPR
// does not apply. window.choose([purposes]) is the visitor deciding in the banner.
import { CmpApi } from "/node_modules/@iabtcf/cmpapi/lib/mjs/index.js";
import { GVL, TCModel, TCString } from "@iabtcf/core";

const CMP_ID = 300;
const named = (ids) => Object.fromEntries(ids.map((id) => [id, { id, name: `#${id}` }]));
const gvl = new GVL({  // a small vendor list of our own: no network
  gvlSpecificationVersion: 3, vendorListVersion: 126, tcfPolicyVersion: 5,
  lastUpdated: "2026-01-15T16:00:00Z", purposes: named([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
  specialPurposes: named([1, 2, 3]), features: named([1, 2, 3]), specialFeatures: named([1, 2]),
  stacks: {}, dataCategories: {}, vendors: {},
});
const cmp = new CmpApi(CMP_ID, 2, true);

function encode(purposes) {
  const model = new TCModel(gvl);
  model.cmpId = CMP_ID;
  model.cmpVersion = 2;
  model.publisherCountryCode = "DE";
  model.isServiceSpecific = true;
  model.purposeConsents.set(purposes);
  return TCString.encode(model);
}

window.choose = (purposes) => cmp.update(encode(purposes), false);
const start = new URLSearchParams(window.location.search).get("tc");
if (start === null) cmp.update("", true);
else if (start === "null") cmp.update(null, false);
else window.choose(start ? start.split(",").map(Number) : []);
