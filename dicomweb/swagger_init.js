// Starts Swagger UI on /api-docs (dicomweb/swagger.py). A file of its own, not an inline script, so that the page's
// Content-Security-Policy allows this server's scripts only.
window.ui = SwaggerUIBundle({
  url: '/api/openapi-3.0.json', // the OpenAPI document as Swagger UI 4 reads it (dicomweb/openapi30.py)
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null, // Swagger UI would otherwise send the document's address to a validator on the internet
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
