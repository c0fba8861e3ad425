// A Lambda handler as `sam init` writes it (ES module): it answers GET /hello/{name}.
export const lambdaHandler = async (event) => {
  const name = (event.pathParameters && event.pathParameters.name) || "world";
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      message: `${process.env.GREETING || "hello"}, ${name}`,
      region: process.env.REGION,
      stage: event.requestContext && event.requestContext.stage,
      path: event.path,
    }),
  };
};
