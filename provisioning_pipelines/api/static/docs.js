// The API reference: Swagger UI (served by this server) rendering /openapi.json.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#reference",
    deepLinking: true,
    validatorUrl: null,
    withCredentials: true,
  });
});
