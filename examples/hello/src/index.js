// A Lambda handler, unchanged from what AWS Lambda runs.
exports.handler = async (event, context) => {
  const name = (event.queryStringParameters && event.queryStringParameters.name) || "world";
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      message: `hello, ${name}`,
      path: event.rawPath || event.path,
      stage: event.requestContext && event.requestContext.stage,
      requestId: context.awsRequestId,
    }),
  };
};
