"""The HTTP floor: a plain ASGI endpoint answering a constant.  python floor_asgi.py PORT"""

import sys

import uvicorn

BODY = b'{"model_name":"iris","outputs":[{"name":"predictions","shape":[1],"datatype":"BYTES","data":["setosa"]}]}'


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
