// Package webhook is the injector's admission, and only that:
//   - the mutating webhook that gives annotated pods the elector sidecar
//     (NewHandler and NewHTTPHandler, served at PodPath): the annotations
//     it reads (annotations.go), the container it writes (mutate.go,
//     resources.go) and the Settings it writes it with;
//   - the validating webhook that checks every EndpointSlice write of an
//     elector's account (EndpointSliceHandler, served at
//     EndpointSlicePath; see ReviewEndpointSlice).
//
// How a pod's elector is found and read (ElectorContainer, ElectorFlags)
// lives here too: the grant reconciler (pkg/grants) reads pods through the
// same functions, so that what an account is granted and what its writes
// are checked against follow from one reading.
package webhook
