// Test vectors for dmp's TC string decoder (collectors/tcstring.py), encoded by IAB's own
// @iabtcf/core (tests/package.json pins the version). Run from the repository's root:
//
//   node tests/collectors/tcf/make_vectors.mjs > tests/collectors/tcf/vectors.json
//
// Each vector is a TC string and the fields @iabtcf/core decodes from it again (the
// encoder drops signals its vendor list does not allow, so the decoded model is the truth).
// The vendor list is a small one made here: no network.
import { GVL, Segment, TCModel, TCString, PurposeRestriction } from "@iabtcf/core";

const ids = (n) => Array.from({ length: n }, (_, i) => i + 1);
const named = (list) => Object.fromEntries(list.map((id) => [id, { id, name: `#${id}` }]));
const vendor = (id) => ({
  id,
  name: `Vendor ${id}`,
  purposes: [1, 2, 3, 4, 7, 9, 10],
  legIntPurposes: [],
  flexiblePurposes: [2, 7, 9, 10],
  specialPurposes: [1],
  features: [],
  specialFeatures: [1, 2],
  policyUrl: "https://vendor.example/privacy",
  cookieMaxAgeSeconds: 86400,
  usesCookies: true,
  cookieRefresh: false,
  usesNonCookieAccess: false,
});
const liVendor = (id) => ({ ...vendor(id), purposes: [1], legIntPurposes: [2, 7, 9, 10] });

// Dense low ids (bitfield), a long run (range), sparse and very large ids (range).
const vendorIds = [...ids(40), ...Array.from({ length: 300 }, (_, i) => 100 + i), 755, 1500, 30000, 65535];
const vendors = Object.fromEntries(vendorIds.map((id) => [id, id % 5 === 0 ? liVendor(id) : vendor(id)]));
const gvl = new GVL({
  gvlSpecificationVersion: 3,
  vendorListVersion: 126,
  tcfPolicyVersion: 4,
  lastUpdated: "2026-01-15T16:00:00Z",
  purposes: named(ids(11)),
  specialPurposes: named([1, 2, 3]),
  features: named([1, 2, 3]),
  specialFeatures: named([1, 2]),
  stacks: {},
  dataCategories: {},
  vendors,
});

const DAY = new Date(Date.UTC(2026, 2, 14));
const LATER = new Date(Date.UTC(2026, 4, 2, 9, 30, 12, 300));

function model(m) {
  const tc = new TCModel(gvl);
  tc.cmpId = m.cmpId ?? 300;
  tc.cmpVersion = m.cmpVersion ?? 2;
  tc.consentScreen = m.consentScreen ?? 1;
  tc.publisherCountryCode = m.country ?? "DE";
  tc.isServiceSpecific = m.serviceSpecific ?? false;
  tc.useNonStandardStacks = m.nonStandard ?? false; // UseNonStandardTexts in TCF v2.2
  tc.purposeOneTreatment = m.purposeOneTreatment ?? false;
  tc.created = m.created ?? DAY;
  tc.lastUpdated = m.lastUpdated ?? DAY;
  tc.purposeConsents.set(m.purposes ?? []);
  tc.purposeLegitimateInterests.set(m.purposesLI ?? []);
  tc.specialFeatureOptins.set(m.specialFeatures ?? []);
  tc.vendorConsents.set(m.vendors ?? []);
  tc.vendorLegitimateInterests.set(m.vendorsLI ?? []);
  tc.publisherConsents.set(m.publisherPurposes ?? []);
  tc.publisherLegitimateInterests.set(m.publisherPurposesLI ?? []);
  if (m.customPurposes) {
    tc.customPurposes = named(ids(m.customPurposes));
    tc.publisherCustomConsents.set(m.customConsents ?? []);
    tc.publisherCustomLegitimateInterests.set(m.customLI ?? []);
  }
  for (const [purpose, type, restricted] of m.restrictions ?? []) {
    const restriction = new PurposeRestriction(purpose, type);
    for (const id of restricted) tc.publisherRestrictions.add(id, restriction);
  }
  return tc;
}

const CASES = [
  ["no consent at all", {}],
  ["accept all", { purposes: ids(11), purposesLI: [2, 7, 9, 10], specialFeatures: [1, 2], vendors: vendorIds, vendorsLI: vendorIds }],
  ["ads and analytics, few vendors (bitfield)", { purposes: [1, 3, 4, 7], vendors: [1, 2, 3, 17, 40] }],
  ["analytics only through purpose 9", { purposes: [1, 9], vendors: [2, 4] }],
  ["ads without purpose 1", { purposes: [3, 4, 7, 9], vendors: [1] }],
  ["a long run of vendors (range)", { purposes: [1, 3, 4], vendors: Array.from({ length: 300 }, (_, i) => 100 + i) }],
  ["large sparse vendor ids (range)", { purposes: [1, 7], vendors: [3, 755, 1500, 30000, 65535], vendorsLI: [30000] }],
  ["legitimate interest only", { purposesLI: [2, 7, 9, 10], vendorsLI: [5, 10, 15, 20, 105] }],
  ["publisher restrictions", {
    purposes: [1, 2, 3, 4], vendors: [1, 2, 3],
    restrictions: [[2, 0, [1, 2, 3, 4, 5]], [7, 1, [10, 20, 755]], [9, 2, [110, 111, 112, 1500]]],
  }],
  ["service-specific with publisher TC segment", {
    serviceSpecific: true, purposes: [1, 3, 4], vendors: [6, 7],
    publisherPurposes: [1, 2, 7], publisherPurposesLI: [9, 10],
    customPurposes: 3, customConsents: [1, 3], customLI: [2],
  }],
  ["other CMP, dates with time, purpose one treatment", {
    cmpId: 4095, cmpVersion: 4095, consentScreen: 63, country: "AA", purposeOneTreatment: true,
    nonStandard: true, created: DAY, lastUpdated: LATER, purposes: [2, 3, 4, 5, 6, 8, 10, 11],
  }],
  ["vendor 65535 alone", { purposes: [1, 3, 4, 7, 9], vendors: [65535] }],
];

const setOf = (vector) => {
  const out = [];
  vector.forEach((has, id) => { if (has) out.push(id); });
  return out;
};

function expected(string) {
  const tc = TCString.decode(string);
  const restrictions = [];
  for (const r of tc.publisherRestrictions.getRestrictions()) {
    restrictions.push([r.purposeId, r.restrictionType, tc.publisherRestrictions.getVendors(r)]);
  }
  restrictions.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  // A segment's first character holds its 3-bit type: type 3 (publisher TC) is Y to f.
  const hasPublisher = string.split(".").some((s, i) => i > 0 && "YZabcdef".includes(s[0]));
  return {
    version: tc.version,
    created: tc.created.toISOString(),
    last_updated: tc.lastUpdated.toISOString(),
    cmp_id: tc.cmpId,
    cmp_version: tc.cmpVersion,
    consent_screen: tc.consentScreen,
    consent_language: tc.consentLanguage,
    vendor_list_version: tc.vendorListVersion,
    policy_version: tc.policyVersion,
    is_service_specific: tc.isServiceSpecific,
    use_non_standard_texts: tc.useNonStandardStacks,
    special_features: setOf(tc.specialFeatureOptins),
    purpose_consents: setOf(tc.purposeConsents),
    purpose_li: setOf(tc.purposeLegitimateInterests),
    purpose_one_treatment: tc.purposeOneTreatment,
    publisher_cc: tc.publisherCountryCode,
    vendor_consents: setOf(tc.vendorConsents),
    vendor_li: setOf(tc.vendorLegitimateInterests),
    restrictions,
    publisher: hasPublisher ? {
      purpose_consents: setOf(tc.publisherConsents),
      purpose_li: setOf(tc.publisherLegitimateInterests),
      custom_consents: setOf(tc.publisherCustomConsents),
      custom_li: setOf(tc.publisherCustomLegitimateInterests),
    } : null,
  };
}

const vectors = [];
for (const [name, m] of CASES) {
  const tc = model(m);
  // As a CMP stores it (core and disclosed vendors), and as it hands it to vendors (with
  // the publisher TC segment): both shapes reach dmp.
  for (const options of [undefined, { isForVendors: true }]) {
    const string = TCString.encode(tc, options);
    vectors.push({ name: options ? `${name} (for vendors)` : name, string, expected: expected(string) });
  }
}
// Segments in an unusual order and every segment type (publisher TC before the disclosed
// vendors, vendors allowed): a decoder must skip what it does not read.
const all = model(CASES[2][1]);
all.vendorsAllowed.set([1, 2]);
const segments = [Segment.CORE, Segment.PUBLISHER_TC, Segment.VENDORS_ALLOWED, Segment.VENDORS_DISCLOSED];
const string = TCString.encode(all, { segments });
vectors.push({ name: "every segment type", string, expected: expected(string) });

// One vector a line: a change of the encoder shows as a change of the lines it touched.
const lines = vectors.map((v) => "  " + JSON.stringify(v));
process.stdout.write(`{"generator": "@iabtcf/core 1.5.6", "vectors": [\n${lines.join(",\n")}\n]}\n`);
